"""A fake OpenBSD install VM on a serial line, for tests/test_installer.py.

Run under pexpect (a pty: what is typed is echoed by the terminal, as a real console does). Prints the
boot loader's and the installer's prompts in order and reads what the dialogue types. Usage:

    fake_installer.py SCENARIO RECORD.json

SCENARIO: ok | direct (no boot> prompt) | silent (nothing after the BIOS) | noanswer | checksum | stall |
garble (the first install.conf comes back truncated) | race (a pause right after the "#" that starts a
disklabel line) | quit (the installer gives up before CONGRATULATIONS and returns to the shell) | vanish (the
VM goes away during the sets). RECORD.json receives what the fake saw (install.conf, answers, commands).

The dialogue follows distrib/miniroot/install.sub (do_install, install_sets, finish_up) for a machine with
no network interface: the timezone is asked after the sets (no ftplist.cgi hint), the sets question offers
only the CD and the disk, and with -a the script exits after CONGRATULATIONS (`$AI && exit`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

SCENARIO, RECORD = sys.argv[1], sys.argv[2]
record: dict[str, object] = {"commands": [], "answers": [], "confs": []}


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


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


# (question, default): None means no default, so install.conf must answer it.
SETS_QUESTION = "Location of sets? (cd0 disk or 'done')"
TIMEZONE_QUESTION = "What timezone are you in? ('?' for list)"
QUESTIONS: list[tuple[str, str | None]] = [
    ("System hostname? (short form, e.g. 'foo')", None),
    ("Network interface to configure? (name, lladdr, '?', or 'done')", "done"),
    ("DNS domain name? (e.g. 'example.com')", "my.domain"),
    ("Password for root account? (will not echo)", None),
    ("Start sshd(8) by default?", "yes"),
    ("Do you want the X Window System to be started by xenodm(1)?", "no"),
    ("Change the default console to com0?", "yes"),
    ("Which speed should com0 use? (or 'done')", "9600"),
    ("Setup a user? (enter a lower-case loginname, or 'no')", "no"),
    ("Which disk is the root disk? ('?' for details)", "sd0"),
    ("Encrypt the root disk with a (p)assphrase or (k)eydisk?", "no"),
    ("Use (W)hole disk MBR, whole disk (G)PT or (E)dit?", "whole"),
    ("URL to autopartitioning template for disklabel?", "none"),
    ("Use (A)uto layout, (E)dit auto layout, or create (C)ustom layout?", "a"),
    (SETS_QUESTION, "cd0"),
    ("Pathname to the sets? (or 'done')", "7.9/amd64"),
    ("Set name(s)? (or 'abort' or 'done')", "done"),
    ("Directory does not contain SHA256.sig. Continue without verification?", "no"),
    (SETS_QUESTION, "done"),
    (TIMEZONE_QUESTION, None),
]
#: The installer's list of zones: `ls -1dF` over the base set's zoneinfo, so directories end in "/" and
#: symbolic links in "@"; an answer must equal an entry. zic (usr.sbin/zic/zic.c) makes a Link such as
#: UTC a hard link, so it is listed unmarked.
TZLIST = ["Etc/", "Etc/UTC", "Europe/", "Europe/Paris", "GMT", "UTC", "Zulu"]
#: `disklabel -h -A sd0 | egrep "^#  |^  [a-p]:"`, printed before the layout question.
DISKLABEL = [
    "#                size           offset  fstype [fsize bsize   cpg]",
    "  a:             1.0G               64  4.2BSD   2048 16384     1 # /",
    "  b:           512.0M          2097216    swap",
]


def answer_for(question: str, conf: list[list[object]]) -> str | None:
    """The installer's rule: a key matches a whole-word part of the question; each line is used once."""
    for entry in conf:
        key, value, used = entry
        if not used and re.search(rf"(?<!\w){re.escape(str(key))}(?!\w)", question, re.IGNORECASE):
            entry[2] = True
            return str(value)
    return None


def install(conf_text: str) -> bool:
    conf = [
        [k.strip(), v.strip(), False] for k, _, v in (ln.partition("=") for ln in conf_text.splitlines()) if v
    ]
    questions = list(QUESTIONS)
    if SCENARIO == "noanswer":
        questions.insert(9, ("Frobnicate the widgets? (yes or no)", None))
    out("Performing non-interactive install...\n")
    for question, default in questions:
        if SCENARIO == "stall" and question.startswith("Which disk"):
            out(f"{question} [sd0] ")
            time.sleep(30)  # a prompt nobody answers
            return False
        if question.startswith("Use (A)uto layout"):
            disklabel()
            if SCENARIO == "quit":
                out("'/' must be configured!\n")  # install.sub exits; the shell prompt follows
                return False
        answer = ask(question, default, conf)
        if answer is None:
            return False
        if question == TIMEZONE_QUESTION and answer not in TZLIST:
            out(f"'{answer}' is not a valid timezone on this system.\n")
            if ask(question, default, conf) is None:  # each line answers once: asked again, no answer
                return False
        if question.startswith("Directory does not contain") and answer != "yes":
            out("Installation aborted: unverified sets refused.\n")
            return False
        if question.startswith("Set name"):
            if SCENARIO == "checksum":
                out("Checksum test for base79.tgz failed. Continue anyway? [no] no\n")
                out("Installation of base79.tgz failed.\n")
                return False
            sets()
    out("Saving configuration files... done.\nMaking all device nodes... done.\n")
    out("Relinking to create unique kernel...")  # finish_up: quiet for minutes under emulation
    time.sleep(0.3)
    out(" done.\n\nCONGRATULATIONS! Your OpenBSD install has been successfully completed!\n\n")
    out("When you login to your new system the first time, please read your mail\n")
    out("using the 'mail' command.\n\n")
    return True  # -a: install.sub exits here ($AI && exit), back to the shell that ran it


def ask(question: str, default: str | None, conf: list[list[object]]) -> str | None:
    out(f"{question}{f' [{default}]' if default else ''} ")
    answer = answer_for(question, conf)
    if answer is None:
        answer = default
    if answer is None:
        out(f'\nQuestion has no answer in response file: "{question.lower()}"\n')
        return None
    record["answers"].append([question, answer])  # type: ignore[attr-defined]
    out(("" if "Password" in question else answer) + "\n")
    return answer


def disklabel() -> None:
    out("The auto-allocated layout for sd0 is:\n")
    for line in DISKLABEL:
        if SCENARIO == "race" and line.startswith("#"):  # a serial read that ends right after the "#"
            out(line[0])
            time.sleep(1.0)
            line = line[1:]
        out(line + "\n")


def sets() -> None:
    for name in ("bsd", "bsd.rd", "base79.tgz"):
        for percent in (0, 40, 80, 100):
            bar = "*" * (percent // 10)
            out(f"\rInstalling {name:<14} {percent:3d}% |{bar:<10}| {percent} MB    00:0{percent // 40} ETA")
            time.sleep(0.01)
            if SCENARIO == "vanish" and percent == 40:
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


def edit_ttys(line: str) -> str:
    """Run a command that edits /mnt/etc/ttys for real, in a scratch root, with /bin/sh."""
    root = RECORD + ".root"
    os.makedirs(root + "/mnt/etc", exist_ok=True)
    os.makedirs(root + "/tmp", exist_ok=True)
    if not os.path.exists(root + "/mnt/etc/ttys"):
        with open(root + "/mnt/etc/ttys", "w") as f:
            f.write(TTYS)
    command = re.sub(r"(?<![\w.])/(mnt|tmp)/", lambda m: f"{root}/{m[1]}/", line)
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
    with open(root + "/mnt/etc/ttys") as f:
        record["ttys"] = f.read()
    return done.stdout + done.stderr


def shell() -> None:
    conf_text = ""
    garbled = SCENARIO == "garble"
    while True:
        out("# ")
        line = read()
        record["commands"].append(line)  # type: ignore[attr-defined]
        if m := re.fullmatch(r"cat > (\S+) <<'(\w+)'", line):
            lines = []
            while True:
                out("> ")
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
            out(conf_text + "CONF-END\n")
        elif line == "install -af /install.conf":
            install(conf_text)
        elif line.startswith("{ test -f /mnt/etc/rc.conf"):
            out("CLEANED\n")
        elif "/mnt/etc/ttys" in line:
            out(edit_ttys(line))
        elif line == "halt -p":
            out("syncing disks... done\nThe operating system has halted.\n")
            save()
            sys.exit(0)


def main() -> None:
    if SCENARIO == "silent":  # the loader auto-booted on VGA: nothing more on the serial line
        out("SeaBIOS (version 1.16.2)\nBooting from DVD/CD...\n")
        time.sleep(30)
    if SCENARIO != "direct":
        out(">> OpenBSD/amd64 CDBOOT 3.65\nboot> ")
        record["loader"] = [read()]
        out("switching console to com0\n>> OpenBSD/amd64 CDBOOT 3.65\nboot> ")
        record["loader"].append(read())  # type: ignore[attr-defined]
        out("cd0a:/7.9/amd64/bsd.rd: 3987003+1657856+3872664+0+708608 [109+440+28]=0x9b1aa8\n")
        out("entry point at 0x1001000\n")
    out("Copyright (c) 1982, 1986, 1989, 1991, 1993\n\tThe Regents of the University of California.\n")
    out("OpenBSD 7.9 (RAMDISK_CD) #42: Mon Apr  6 12:00:00 MDT 2026\n")
    out("root on rd0a swap on rd0b dump on rd0b\nerase ^?, werase ^W, kill ^U, intr ^C, status ^T\n\n")
    out("Welcome to the OpenBSD/amd64 7.9 installation program.\n")
    out("(I)nstall, (U)pgrade, (A)utoinstall or (S)hell? ")
    record["menu"] = read()
    shell()


if __name__ == "__main__":
    try:
        main()
    finally:
        save()
