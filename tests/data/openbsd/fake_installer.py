"""A fake OpenBSD install VM on a serial line, for tests/test_installer.py.

Run under pexpect (a pty: what is typed is echoed by the terminal, as a real console does). Prints the
boot loader's and the installer's prompts in order and reads what the dialogue types. Usage:

    fake_installer.py SCENARIO RECORD.json

SCENARIO: ok | direct (no boot> prompt) | silent (nothing after the BIOS) | noanswer | checksum | stall |
garble (the first install.conf comes back truncated). RECORD.json receives what the fake saw
(install.conf, answers, commands).
"""

from __future__ import annotations

import json
import os
import re
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
    ("Allow root ssh login? (yes, no, prohibit-password)", "no"),
    ("What timezone are you in? ('?' for list)", None),
    ("Which disk is the root disk? ('?' for details)", "sd0"),
    ("Encrypt the root disk with a (p)assphrase or (k)eydisk?", "no"),
    ("Use (W)hole disk MBR, whole disk (G)PT or (E)dit?", "whole"),
    ("Use (A)uto layout, (E)dit auto layout, or create (C)ustom layout?", "a"),
    ("Location of sets? (cd0 disk nfs or 'done')", None),
    ("Pathname to the sets? (or 'done')", "7.9/amd64"),
    ("Set name(s)? (or 'abort' or 'done')", "done"),
    ("Directory does not contain SHA256.sig. Continue without verification?", "no"),
    ("Location of sets? (cd0 disk nfs or 'done')", "done"),
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
        questions.insert(11, ("Frobnicate the widgets? (yes or no)", None))
    out("Performing non-interactive install...\n")
    for question, default in questions:
        if SCENARIO == "stall" and question.startswith("Which disk"):
            out(f"{question} [sd0] ")
            time.sleep(30)  # a prompt nobody answers
            return False
        out(f"{question}{f' [{default}]' if default else ''} ")
        answer = answer_for(question, conf)
        if answer is None:
            answer = default
        if answer is None:
            out(f'\nQuestion has no answer in response file: "{question.lower()}"\n')
            return False
        record["answers"].append([question, answer])  # type: ignore[attr-defined]
        out(("" if "Password" in question else answer) + "\n")
        if question.startswith("Directory does not contain") and answer != "yes":
            out("Installation aborted: unverified sets refused.\n")
            return False
        if question.startswith("Set name") and SCENARIO == "checksum":
            out("Checksum test for base79.tgz failed. Continue anyway? [no] no\n")
            out("Installation of base79.tgz failed.\n")
            return False
    for name in ("bsd", "bsd.rd", "base79.tgz"):
        for percent in (0, 40, 80, 100):
            bar = "*" * (percent // 10)
            out(f"\r{name:<14} {percent:3d}% |{bar:<10}| {percent} MB    00:0{percent // 40} ETA")
            time.sleep(0.01)
        out("\n")
    out("Installing bsd.mp ... done.\nSaving configuration files... done.\n")
    out("Making all device nodes... done.\nRelinking to create unique kernel... ")
    time.sleep(0.3)
    out("done.\n\nCONGRATULATIONS! Your OpenBSD install has been successfully completed!\n\n")
    exit_answer = answer_for("Exit to (S)hell, (H)alt or (R)eboot?", conf) or "reboot"
    out(f"Exit to (S)hell, (H)alt or (R)eboot? [reboot] {exit_answer}\n")
    if not exit_answer.lower().startswith("s"):
        out("rebooting...\n")
        save()
        sys.exit(0)
    return True


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
