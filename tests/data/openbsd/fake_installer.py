"""A fake OpenBSD install VM on a serial line, for tests/test_installer.py.

Run under pexpect (a pty: what is typed is echoed by the terminal, as a real console does). Usage:

    fake_installer.py SCENARIO RECORD.json

SCENARIO: ok | direct (no boot> prompt) | silent (nothing after the BIOS) | checksum | stall | garble (the
first install.conf comes back truncated) | race (a pause right after the "#" that starts a disklabel line) |
quit (the installer gives up before CONGRATULATIONS and returns to the shell) | vanish (the VM goes away
during the sets). RECORD.json receives what the fake saw (install.conf, answers, commands, the prompts it
showed).

Everything it prints comes from tests/data/openbsd/strings.yaml (OpenBSD's strings, each with the source file
and revision it was read in), looked up by name: a name the list does not hold stops the fake with a
KeyError. What it adds is what those programs echo back: the answers install.sub echoes after a question,
the output of the commands typed (cat, the real /bin/sh running the /etc/ttys edits), and newlines.

Behaviour, from the same sources: the ramdisk's ksh prompts with its default PS1 (`\\h\\$ `, expanded as
lex.c does: the short host name, '#' for root), so the (S)hell's first prompt is "# " and, once install.sub
has set the host name, "ikedlab# "; a PS1 assignment typed to it changes that. install.sub 1.1278's do_install
asks its questions in order for a machine with one CD, one disk and no network card, answers them from the
response file with _autorespond's rule (a key matches where it starts the question or follows a blank, and
is followed by a blank, '?' or the end; each line once; lowercase compare), and with -a exits to the shell
after CONGRATULATIONS. `halt -p` on the install kernel (a SMALL_KERNEL) halts, waits for a key and resets.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import strings  # noqa: E402 - tests/data/openbsd/strings.py, beside this file

SCENARIO, RECORD = sys.argv[1], sys.argv[2]
S = strings.load()
record: dict[str, object] = {"commands": [], "answers": [], "confs": [], "prompts": [], "unknown": []}
shell_state = {"hostname": "", "ps1": S["ksh.ps1.default"].render()}
VNAME, ARCH = "7.9", "amd64"


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def say(name: str, *args: object, end: str = "\n") -> None:
    """Print a recorded string (filled in when it is a format)."""
    out(S[name].render(*args) + end)


def read() -> str:
    save()  # the test may kill this process at any prompt
    line = sys.stdin.readline()
    if not line:
        save()
        sys.exit(0)
    return line.rstrip("\r\n")


def save() -> None:
    with open(RECORD + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(RECORD + ".tmp", RECORD)


# --- ksh's prompt ------------------------------------------------------------------------------------------
def prompt() -> str:
    """PS1 as ksh expands it (bin/ksh/lex.c dopprompt): only the escapes the default prompt uses."""
    short = shell_state["hostname"].split(".")[0]
    text = shell_state["ps1"]
    expanded = re.sub(r"\\(.)", lambda m: {"h": short, "$": "#"}[m[1]], text)  # KeyError: unknown escape
    record["prompts"].append(expanded)  # type: ignore[attr-defined]
    return expanded


# --- install.sub's questions ---------------------------------------------------------------------------
class NoAnswer(Exception):
    pass


def autorespond(question: str, conf: list[list[object]]) -> str | None:
    """install.sub's _autorespond: the first unused line whose key sits in the question as a word."""
    q = question.lower()
    for entry in conf:
        key, value, used = entry
        k = str(key).lower()
        if not used and re.fullmatch(rf"(?:|.*[ \t]){re.escape(k)}(?:[ \t?].*|)", q, re.DOTALL):
            entry[2] = True
            return str(value)
    return None


def ask(name: str, conf: list[list[object]], default: str | None = None) -> str:
    """install.sub's ask under AI: the question, [default], then the answer it found (or the default)."""
    q = S[name].render()
    default = S[name].default if default is None else default
    out(f"{q} {f'[{default}] ' if default else ''}")
    answer = autorespond(q, conf)
    if answer is None:
        answer = default
    if answer is None:
        out("\n")
        say("install.no_answer", q.lower())
        raise NoAnswer(q)
    record["answers"].append([q, answer])  # type: ignore[attr-defined]
    out(answer + "\n")
    return answer


def ask_password(name: str, conf: list[list[object]]) -> str:
    q = S[name].render()
    out(q + " ")
    answer = autorespond(q, conf)
    if answer is None:
        out("\n")
        say("install.no_answer", q.lower())
        raise NoAnswer(q)
    record["answers"].append([q, answer])  # type: ignore[attr-defined]
    say("install.provided")
    return answer


def ask_which(name: str, conf: list[list[object]]) -> str:
    """ask_which: the question is looked up without the "(or 'done')" it shows."""
    q = S[name].render()
    shown_default = S[name].default
    bare = q.removesuffix(" (or 'done')")
    out(f"{q} [{shown_default}] ")
    answer = autorespond(bare, conf) or shown_default or "done"
    record["answers"].append([q, answer])  # type: ignore[attr-defined]
    out(answer + "\n")
    return answer


#: The installer's zone list: `ls -1dF` over the base set's zoneinfo, so directories end in "/" and symbolic
#: links in "@"; zic (usr.sbin/zic/zic.c) makes a Link such as UTC a hard link, listed unmarked.
TZLIST = ["Etc/", "Etc/UTC", "Europe/", "Europe/Paris", "GMT", "UTC", "Zulu"]


def install(conf_text: str) -> bool:
    """install.sub's do_install with -af, for the build VM; True when it reached CONGRATULATIONS."""
    conf = [
        [k.strip(), v.strip(), False] for k, _, v in (ln.partition("=") for ln in conf_text.splitlines()) if v
    ]
    try:
        ask("install.q.terminal", conf)
        hostname = ask("install.q.hostname", conf)
        shell_state["hostname"] = hostname  # install.sub: hostname "$resp"
        out("\n")
        domain = ask("install.q.domain", conf)
        shell_state["hostname"] = f"{hostname.split('.')[0]}.{domain}"  # hostname "$(hostname -s).$resp"
        ask("install.q.nameservers", conf)
        out("\n")
        ask_password("install.q.root_password", conf)
        ask("install.q.root_ssh_key", conf)
        ask("install.q.sshd", conf)
        ask("install.q.xenodm", conf)
        ask("install.q.console", conf)
        say("install.speeds")
        ask_which("install.q.speed", conf)
        ask("install.q.user", conf)
        out("\n")
        say("install.disks")
        if SCENARIO == "stall":
            out(f"{S['install.q.root_disk'].render()} [sd0] ")
            time.sleep(30)  # a prompt nobody answers
            return False
        ask("install.q.root_disk", conf)
        ask("install.q.encrypt", conf)
        say("install.no_mbr")
        ask("install.q.fdisk", conf)
        say("install.fdisk_done")
        ask("install.q.autopartition_url", conf)
        say("install.layout_intro")
        disklabel()
        if SCENARIO == "quit":
            say("install.root_missing")  # configure_disk: `$AI && exit 1`, the shell prompt follows
            return False
        ask("install.q.layout", conf)
        out("\n")
        say("install.lets_install")
        ask("install.q.sets_location", conf)
        ask("install.q.sets_path", conf, default=f"{VNAME}/{ARCH}")
        say("install.select_sets")
        ask("install.q.set_names", conf)
        ask("install.q.set_names", conf)  # asked again until it reads done
        if ask("install.q.unverified", conf) != "yes":
            return False  # ask_yn's no: `$AI && exit 1`
        for name in ("bsd", "bsd.rd", f"base{VNAME.replace('.', '')}.tgz", "BUILDINFO"):
            if SCENARIO == "checksum" and name.endswith(".tgz"):
                out(S["install.checksum_failed"].render(name) + " [no] no\n")
                return False  # ask_yn's no: `$AI && exit 1`
            install_set(name)
        ask("install.q.sets_location", conf, default="done")
        out("\n")
        while True:
            zone = ask("install.q.timezone", conf)
            if zone in TZLIST:
                break
            say("install.bad_timezone", zone)
    except NoAnswer:
        return False
    say("install.saving")
    say("install.makedev")
    say("install.relink", end="")
    time.sleep(0.3)  # finish_up's relink: quiet for minutes under emulation
    out("\n\n")
    say("install.congratulations")
    out("\n")
    say("install.mail_hint")
    say("install.mail_hint_2")
    out("\n")
    return True  # -a: install.sub exits here ($AI && exit), back to the shell that ran it


def disklabel() -> None:
    """`disklabel -h -A sd0 | egrep "^#  |^  [a-p]:"`: the header and the root partition's line."""
    header = S["disklabel.header"].render()
    if SCENARIO == "race":  # a serial read that ends right after the "#"
        out(header[0])
        time.sleep(1.0)
        header = header[1:]
    out(header + "\n")
    line = S["disklabel.partition"].render("a", 1, 1.0, "G", 64, "4.2BSD")
    line += S["disklabel.partition_ffs"].render(2048, 16384, 1) + "# /"
    out(line + "\n")


def install_set(name: str) -> None:
    """ftp -D Installing: a progress meter redrawn on one line with \\r."""
    for _ in range(3):
        out("\r" + S["ftp.progress"].render(name))
        time.sleep(0.01)
        if SCENARIO == "vanish":
            save()
            os._exit(0)  # QEMU went away: the serial line closes mid-set
    out("\n")


# /etc/ttys as the installer leaves it with the console on com0 (amd64).
TTYS = """\
console	"/usr/libexec/getty std.9600"	vt220	off secure
ttyC0	"/usr/libexec/getty std.9600"	vt220	on  secure
ttyC1	"/usr/libexec/getty std.9600"	vt220	on  secure
tty00	"/usr/libexec/getty std.115200"	vt220	on  secure
tty01	"/usr/libexec/getty std.9600"	unknown off
tty02	"/usr/libexec/getty std.9600"	unknown off
"""


def scratch_root() -> str:
    """/mnt (the installed system, as install.sub leaves it) and /tmp, made once per run."""
    root = RECORD + ".root"
    if os.path.isdir(root):
        return root
    for path in ("/mnt/etc", "/tmp", "/mnt/usr/share/relink/kernel/GENERIC", "/mnt/var/db"):
        os.makedirs(root + path, exist_ok=True)
    for path, text in (("/mnt/etc/ttys", TTYS), ("/mnt/etc/rc.conf", ""), ("/mnt/etc/rc.firsttime", "")):
        if not os.path.exists(root + path):
            with open(root + path, "w") as f:
                f.write(text)
    return root


def run_in_root(line: str) -> str:
    """Run a command the dialogue types against /mnt and /tmp, for real, in a scratch root, with /bin/sh."""
    root = scratch_root()
    command = re.sub(r"(?<![\w.])/(mnt|tmp)/", lambda m: f"{root}/{m[1]}/", line)
    command = command.replace("mount /dev/sd0a /mnt", "false")  # the fake's /mnt is always mounted
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
    with open(root + "/mnt/etc/ttys") as f:
        record["ttys"] = f.read()
    record["relink_kit_left"] = os.path.exists(root + "/mnt/usr/share/relink/kernel")
    with open(root + "/mnt/etc/rc.conf") as f:
        record["rc_conf"] = f.read()
    if os.path.exists(root + "/mnt/etc/rc.conf.local"):
        with open(root + "/mnt/etc/rc.conf.local") as f:
            record["rc_conf_local"] = f.read()
    return done.stdout + done.stderr


def halt() -> None:
    """`halt -p` on the install kernel: no ACPI power-off in a SMALL_KERNEL; a key makes it reset."""
    say("kernel.syncing")
    out("\n")
    say("kernel.halted")
    say("kernel.press_key")
    out("\n")
    save()
    sys.stdin.readline()
    say("kernel.rebooting")
    out("\n")
    record["reset"] = True
    save()
    sys.exit(0)  # QEMU -no-reboot exits on the reset


def shell() -> None:
    conf_text = ""
    garbled = SCENARIO == "garble"
    while True:
        out(prompt())
        line = read()
        record["commands"].append(line)  # type: ignore[attr-defined]
        if m := re.fullmatch(r"cat > (\S+) <<'(\w+)'", line):
            lines = []
            while True:
                out(S["ksh.ps2"].render())
                body = read()
                if body == m[2]:
                    break
                lines.append(body)
            if garbled and len(lines) > 1:
                lines[1] = lines[1][:7]  # what a fast line looked like on the real console
                garbled = False
            conf_text = "\n".join(lines) + "\n"
            record["confs"].append(conf_text)  # type: ignore[attr-defined]
        elif line.startswith("cat /install.conf;"):
            out(conf_text + "CONF-END\n")  # cat, then `echo CONF''-END`
        elif line == "install -af /install.conf":
            install(conf_text)
        elif "/mnt/" in line:
            out(run_in_root(line))
        elif line == "halt -p":
            halt()
        else:
            for part in (p.strip() for p in line.split(";")):
                if re.fullmatch(r"set [+-]o \w+", part):
                    continue
                if part.startswith("PS1="):
                    shell_state["ps1"] = shlex.split(part)[0].removeprefix("PS1=")
                    continue
                record["unknown"].append(part)  # type: ignore[attr-defined]


def main() -> None:
    if SCENARIO == "silent":  # the loader auto-booted on VGA: nothing more on the serial line
        say("seabios.booting")
        time.sleep(30)
    if SCENARIO != "direct":
        say("loader.prompt", end="")
        record["loader"] = [read()]
        say("loader.prompt", end="")  # the second boot>, now on com0
        record["loader"].append(read())  # type: ignore[attr-defined]
        say("loader.booting", f"cd0a:/{VNAME}/{ARCH}/bsd.rd")
    say("ramdisk.stty")
    out("\n")
    say("ramdisk.welcome", f"{ARCH}", VNAME)
    say("ramdisk.menu", end="")
    record["menu"] = read()
    shell()


if __name__ == "__main__":
    try:
        main()
    finally:
        save()
