"""OpenBSD's unattended install, driven over a serial console.

From power-on to power-off: at `boot>` (SeaBIOS with serial output, or UEFI) switch the loader to com0 and
boot; at "(I)nstall, (U)pgrade, (A)utoinstall or (S)hell?" take the shell and give it a prompt of our own
(ksh's default, `\\h\\$ `, shows the host name once the installer has set one: "# " before, "ikedlab# "
after); write /install.conf with a heredoc, typed slowly and read back (a fast line has come back truncated
on this console); run `install -af /install.conf`; wait for "CONGRATULATIONS!" while failing fast on the
installer's own failure messages or on a prompt nobody answers; with `-a` the installer then returns to the
shell by itself (distrib/miniroot/install.sub: `$AI && exit`, no "Exit to (S)hell" question); remove the
per-machine state the installer left in /mnt so each guest makes its own at first boot, and the kernel
relink kit (KARL); `halt -p`, and the key the install kernel waits for before it resets (QEMU then exits).

Every OpenBSD string waited for here is in tests/data/openbsd/strings.yaml with the source file and revision
it was read in (tests/test_openbsd_strings.py holds each pattern below against that list).

The console is anything pexpect-like: `expect(patterns, timeout)`, `send(text)`, `before`, `after`
(pexpect.spawn in the image builder, a fake serial peer in the tests). Each failure is a typed error with
a one-line message naming what happened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pexpect

from lab.errors import ImageError
from lab.progress import say

# --- what the loader, the ramdisk, the installer and the kernel print ------------------------------------
BOOT_PROMPT = re.compile(r"boot> ?")
WELCOME = re.compile(r"Welcome to the OpenBSD/\S+ (\S+) installation program")
MENU = re.compile(r"\(I\)nstall, \(U\)pgrade, \(A\)utoinstall or \(S\)hell\? ?")
#: ksh's default prompt for root, `\h\$ `: the short host name (none yet on the ramdisk: "# "; "ikedlab# "
#: once install.sub has set it) and '#'. Only the (S)hell's first prompt is read with it: the dialogue then
#: sets PS1 to BUILD_PS1, which no host name, disklabel line or installer question can look like.
RAMDISK_PROMPT = re.compile(r"(?:^|\n)[A-Za-z0-9-]*# ?$")
PS2 = re.compile(r"(?:^|\n)> ?$")  # the shell asking for the next heredoc line (ksh's PS2)
CONGRATULATIONS = re.compile(r"CONGRATULATIONS!")
NO_ANSWER = re.compile(r'Question has no answer in response file:?\s*"?(?P<question>[^"\r\n]*)"?')
CHECKSUM_FAILED = re.compile(r"Checksum test for (?P<set>\S+) failed")
INSTALL_FAILED = re.compile(r"Installation of (?P<set>\S+) failed")
PANIC = re.compile(r"\bpanic: (?P<what>.*)")
#: `halt -p` on the install kernel: RAMDISK_CD is a SMALL_KERNEL, whose boot() skips the ACPI power-off,
#: says it halted and waits for a key; the key makes it reset, and QEMU's -no-reboot turns that into an exit.
PRESS_KEY = re.compile(r"Please press any key to reboot")

# --- our own text: the prompt we set, markers we echo ------------------------------------------------------
BUILD_PS1 = "ikedlab-build# "
SHELL_PROMPT = re.compile(rf"(?:^|\n){re.escape(BUILD_PS1)}$")
LINE = re.compile(r"[^\r\n]*[\r\n]")  # one line of output, or one redraw of a progress bar (\r)
#: A line that waits for an answer: ends in '?', ':' or a "[default]".
QUESTION_LIKE = re.compile(r"(?:\?|:|\])\s*$")
CONF_END = re.compile(r"(?:^|\n)CONF-END")
#: Patterns above that match ikedlab's own text, not OpenBSD's (every other one is held against the
#: recorded OpenBSD strings by tests/test_openbsd_strings.py).
OWN_PATTERNS = ("SHELL_PROMPT", "LINE", "QUESTION_LIKE", "CONF_END")

CONF_PATH = "/install.conf"
HEREDOC_END = "IKEDLAB_EOF"

#: What the installer leaves per machine; a golden image must not carry it, or every guest would share it.
#: (The iked and ssh keys are not here: the installer makes none, /etc/rc's make_keys does at first boot.)
PER_MACHINE_FILES = (
    "/mnt/etc/rc.firsttime",  # fw_update and syspatch at first boot: they need the network
    "/mnt/etc/random.seed",  # install.sub's store_random: the entropy seeds the next boot starts from;
    "/mnt/var/db/host.random",  # /etc/rc writes fresh ones at each boot
)
#: The kernel relink kit. /etc/rc (rc 1.586) runs /usr/libexec/reorder_kernel at every boot, which relinks
#: the kernel in a random order (KARL): minutes of CPU under emulation, in every guest, at every boot. The
#: script (reorder_kernel.sh 1.15) starts with `df -t nonfs` of this directory under `set -o errexit`, so
#: when it is gone the script ends there, silently, before its failure traps. The installer already removed
#: kernel.tgz after its own relink; lab guests are throwaway overlays that never need another.
KERNEL_RELINK_KIT = "/mnt/usr/share/relink/kernel"
#: Lines added to the image's /etc/rc.conf.local. The image leaves out the comp set, and /etc/rc's
#: reorder_libs relinks libc and libcrypto with `cc -shared` (cc is in comp): it would print
#: "reordering libraries: failed." at every boot. Lab guests are throwaway overlays; say so instead.
RC_CONF_LOCAL = ("library_aslr=NO",)


class Console(Protocol):
    before: Any
    after: Any

    def expect(self, pattern: Any, timeout: float | None = -1) -> int: ...

    def send(self, s: str) -> int: ...


# --- errors -------------------------------------------------------------------------------------------


class InstallerError(ImageError):
    """The unattended OpenBSD install did not finish."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class InstallerNoAnswer(InstallerError):
    """install.conf has no answer for a question that has no default."""

    def __init__(self, question: str, tail: str = "") -> None:
        self.question = question
        super().__init__(f"the OpenBSD installer asked what install.conf does not answer: {question}", tail)


class InstallerChecksumFailed(InstallerError):
    """A set on the install media does not match its checksum."""

    def __init__(self, set_name: str, tail: str = "") -> None:
        self.set_name = set_name
        super().__init__(f"the OpenBSD installer found a bad checksum for {set_name}: damaged media", tail)


class InstallerStalled(InstallerError):
    """The console went quiet: a prompt nobody answers, or a step that hangs."""

    def __init__(self, waiting_at: str, seconds: float, tail: str = "") -> None:
        self.waiting_at = waiting_at
        super().__init__(f"the OpenBSD installer stalled: no output for {seconds:g}s at '{waiting_at}'", tail)


class InstallerTimeout(InstallerError):
    """Something expected did not come in time (a prompt, the end of the install, the halt)."""


class InstallerExited(InstallerError):
    """The VM went away (QEMU exited) before the dialogue was over."""


# --- knobs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """Seconds. The defaults suit software emulation (TCG), where everything is slow."""

    boot: float = 900  # power-on to the installer's menu: firmware, loader, kernel, ramdisk
    prompt: float = 120  # a shell prompt, an echo, a heredoc line
    install: float = 7200  # `install -af` to CONGRATULATIONS
    question_stall: float = 180  # quiet after something that looks like a question
    work_stall: float = 1800  # quiet after anything else (the kernel relink prints nothing for minutes)
    halt: float = 300


@dataclass(frozen=True)
class Typing:
    """Type like a person at a serial terminal: a fast line has come back truncated."""

    chunk: int = 8
    delay: float = 0.05  # seconds between chunks


@dataclass(frozen=True)
class InstallResult:
    seconds: float
    release: str  # as the installer's greeting said it ("" if the greeting was not seen)


# --- the dialogue -------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""


def _tail(text: str, lines: int = 5) -> str:
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class _Dialogue:
    def __init__(self, console: Console, timeouts: Timeouts, typing: Typing) -> None:
        self.console = console
        self.timeouts = timeouts
        self.typing = typing
        self.recent: list[str] = []  # last lines seen, for error messages

    # low level
    def wait(self, patterns: Sequence[Any], timeout: float, waiting_for: str) -> int:
        """expect() one of `patterns`; EOF and TIMEOUT become typed errors naming `waiting_for`."""
        index = self.console.expect([*patterns, pexpect.EOF, pexpect.TIMEOUT], timeout=timeout)
        seen = _text(self.console.before) + _text(self.console.after)
        self.remember(seen)
        if index == len(patterns):
            raise InstallerExited(f"the OpenBSD VM exited while waiting for the {waiting_for}", self.tail())
        if index == len(patterns) + 1:
            last = self.recent[-1].strip() if self.recent else "nothing"
            raise InstallerTimeout(f"no {waiting_for} within {timeout:g}s (last output: {last})", self.tail())
        return index

    def remember(self, text: str) -> None:
        lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
        self.recent = (self.recent + lines)[-20:]

    def tail(self) -> str:
        return "\n".join(self.recent[-5:])

    def type(self, line: str) -> None:
        """Send `line` and Enter in small chunks, pausing between them."""
        step = max(1, self.typing.chunk)
        for i in range(0, len(line), step):
            self.console.send(line[i : i + step])
            if self.typing.delay:
                time.sleep(self.typing.delay)
        self.console.send("\r")

    def command(self, line: str, waiting_for: str) -> str:
        """Type a shell command and wait for the next prompt; return what came between."""
        self.type(line)
        self.wait([SHELL_PROMPT], self.timeouts.prompt, waiting_for)
        return _text(self.console.before)

    # steps
    def boot(self) -> str:
        """Power-on to the installer's menu; returns the release the greeting names."""
        release = ""
        deadline = time.monotonic() + self.timeouts.boot
        switched = False
        while True:
            left = max(1.0, deadline - time.monotonic())
            index = self.wait(
                [BOOT_PROMPT, WELCOME, MENU],
                left,
                "boot> prompt or installer greeting from the OpenBSD media",
            )
            if index == 0:
                if switched:  # the second boot> is on com0 already
                    self.type("boot")
                else:  # the loader starts on pc0: move it (and so the kernel) to the serial line
                    self.type("set tty com0")
                    switched = True
            elif index == 1:
                m = WELCOME.search(_text(self.console.after))
                release = m[1] if m else ""
            else:
                return release

    def open_shell(self) -> None:
        self.type("S")
        self.wait([RAMDISK_PROMPT], self.timeouts.prompt, "shell prompt from the installer's (S)hell")
        # No line editor: ksh's emacs mode (dot.profile sets it) redraws long lines, which would garble what
        # comes back. A prompt of our own: ksh's default one changes with the host name the install sets.
        # The quotes keep the assignment's echo from looking like the prompt it sets.
        quoted = "'" + BUILD_PS1[:7] + "''" + BUILD_PS1[7:] + "'"
        self.command(f"set +o emacs; set +o vi; PS1={quoted}", "prompt set with PS1")

    def write_conf(self, conf: str) -> None:
        lines = [line.rstrip() for line in conf.strip().splitlines()]
        for attempt in (1, 2):
            self.type(f"cat > {CONF_PATH} <<'{HEREDOC_END}'")
            for line in lines:
                self.wait([PS2], self.timeouts.prompt, "heredoc prompt (> )")
                self.type(line)
            self.wait([PS2], self.timeouts.prompt, "heredoc prompt (> )")
            self.type(HEREDOC_END)
            self.wait([SHELL_PROMPT], self.timeouts.prompt, "shell prompt after the heredoc")
            # Read it back: the quotes keep the marker's echo from matching the marker itself.
            self.type(f"cat {CONF_PATH}; echo CONF''-END")
            self.wait([CONF_END], self.timeouts.prompt, f"read-back of {CONF_PATH}")
            printed = _text(self.console.before).replace("\r", "").split("\n")[1:]
            self.wait([SHELL_PROMPT], self.timeouts.prompt, "shell prompt")
            got = [line.rstrip() for line in printed if line.strip()]
            if got == [line for line in lines if line]:
                return
            say(f"  {CONF_PATH} came back garbled (attempt {attempt}); typing it again")
        raise InstallerError(f"{CONF_PATH} came back garbled twice over the serial console", self.tail())

    def install(self) -> None:
        """`install -af` until CONGRATULATIONS and the shell prompt after it."""
        self.type(f"install -af {CONF_PATH}")
        start = time.monotonic()
        last_output = start
        congratulated = False
        previous = ""
        t = self.timeouts
        while True:
            now = time.monotonic()
            if now - start > t.install:
                raise InstallerTimeout(f"the OpenBSD install took longer than {t.install:g}s", self.tail())
            patterns = [LINE, pexpect.EOF, pexpect.TIMEOUT, SHELL_PROMPT]
            index = self.console.expect(patterns, timeout=min(t.question_stall, t.work_stall))
            if index == 0:
                line = (_text(self.console.before) + _text(self.console.after)).strip()
                last_output = time.monotonic()
                if line:
                    self.remember(line)
                    self.judge(line, previous)
                    previous = line
                    congratulated = congratulated or bool(CONGRATULATIONS.search(line))
            elif index == 3:
                if congratulated:
                    return
                # Our prompt is back without CONGRATULATIONS: install.sub exited (`$AI && exit 1`).
                last = previous or "none"
                raise InstallerError(
                    f"the OpenBSD installer quit before CONGRATULATIONS (last output: {last})", self.tail()
                )
            elif index == 1:
                raise InstallerExited("the OpenBSD VM exited during the install", self.tail())
            else:
                pending = _text(self.console.before)
                quiet = time.monotonic() - last_output
                pending = pending.strip()
                if pending and QUESTION_LIKE.search(pending) and quiet >= t.question_stall:
                    raise InstallerStalled(pending.splitlines()[-1].strip(), round(quiet), self.tail())
                if quiet >= t.work_stall:
                    raise InstallerStalled(pending or previous or "install -af", round(quiet), self.tail())

    def judge(self, line: str, previous: str) -> None:
        if m := NO_ANSWER.search(line):
            # The installer prints the question, then this line; quote whichever names it.
            question = m["question"].strip() or previous
            raise InstallerNoAnswer(question, self.tail())
        if m := CHECKSUM_FAILED.search(line):
            raise InstallerChecksumFailed(m["set"], self.tail())
        if m := INSTALL_FAILED.search(line):
            raise InstallerError(f"the OpenBSD installer could not install {m['set']}", self.tail())
        if m := PANIC.search(line):
            raise InstallerError(f"the OpenBSD ramdisk kernel panicked: {m['what'].strip()}", self.tail())

    def clean(self) -> None:
        """Remove per-machine state from the installed system (still mounted at /mnt) and the kernel relink
        kit; set RC_CONF_LOCAL. Two commands: OpenBSD's terminal takes at most 255 characters a line."""
        files = " ".join(PER_MACHINE_FILES)
        settings = "".join(f" && echo {line} >>/mnt/etc/rc.conf.local" for line in RC_CONF_LOCAL)
        mounted = "{ test -f /mnt/etc/rc.conf || mount /dev/sd0a /mnt; }"
        out = self.command(
            f"{mounted} && rm -f {files}{settings} && echo CLEAN''ED",
            "shell prompt after cleaning /mnt",
        )
        if not re.search(r"(?:^|\n)CLEANED", out.replace("\r", "")):
            raise InstallerError("could not clean the installed system in /mnt", _tail(out))
        # The relink directory exists where /usr is mounted: without it the rm would pass and change nothing.
        relink = KERNEL_RELINK_KIT.rsplit("/", 1)[0]
        out = self.command(
            f"test -d {relink} && rm -rf {KERNEL_RELINK_KIT} && echo KARL''OFF",
            "shell prompt after removing the kernel relink kit",
        )
        if not re.search(r"(?:^|\n)KARLOFF", out.replace("\r", "")):
            raise InstallerError(f"could not remove {KERNEL_RELINK_KIT} (is /usr mounted?)", _tail(out))

    def set_ttys(self, lines: Sequence[str]) -> None:
        """Give the installed system's /etc/ttys these terminals' lines (replacing their old ones).

        The golden image's getty on tty01 (com1) is ikedlab's control channel; com0 stays the learner's.
        Two short commands: OpenBSD's terminal takes at most 255 characters a line.
        """
        for line in (" ".join(line.split()) for line in lines):  # blanks, not tabs, typed on a console
            tty = line.split()[0]
            self.command(
                f"grep -v '^{tty}[[:space:]]' /mnt/etc/ttys >/tmp/ttys; printf '%s\\n' '{line}' >>/tmp/ttys",
                "shell prompt after editing /tmp/ttys",
            )
            out = self.command(
                f"cp /tmp/ttys /mnt/etc/ttys && grep -q '^{tty}[[:space:]].* on secure' /mnt/etc/ttys "
                f"&& echo TTYS''SET",
                f"shell prompt after setting {tty} in /mnt/etc/ttys",
            )
            if not re.search(r"(?:^|\n)TTYSSET", out.replace("\r", "")):
                raise InstallerError(f"could not set {tty} in the installed system's /etc/ttys", _tail(out))

    def halt(self) -> None:
        """`halt -p`; the install kernel halts without powering off and waits for a key, which resets it."""
        self.type("halt -p")
        index = self.console.expect([PRESS_KEY, pexpect.EOF, pexpect.TIMEOUT], timeout=self.timeouts.halt)
        if index == 2:
            raise InstallerTimeout(f"the OpenBSD VM did not halt within {self.timeouts.halt:g}s", self.tail())
        if index == 0:
            self.console.send("\r")


def run_install(
    console: Console,
    install_conf: str,
    timeouts: Timeouts | None = None,
    typing: Typing | None = None,
    release: str | None = None,
    ttys: Sequence[str] = (),
) -> InstallResult:
    """Drive a freshly powered-on VM booting OpenBSD's install media to a finished install and halt.

    With `release`, media that greets with another release is refused at once, not after the install.
    `ttys`: /etc/ttys lines the installed system gets (each replaces its terminal's line).
    """
    dialogue = _Dialogue(console, timeouts or Timeouts(), typing or Typing())
    start = time.monotonic()
    greeted = dialogue.boot()
    if release and greeted and greeted != release:
        raise InstallerError(f"the install media is OpenBSD {greeted}, not {release}", dialogue.tail())
    release = greeted
    say(f"  installer of OpenBSD {release or '?'} is up; writing {CONF_PATH}")
    dialogue.open_shell()
    dialogue.write_conf(install_conf)
    say("  running install -af (sets, disk, relink: the long part)")
    dialogue.install()
    dialogue.clean()
    dialogue.set_ttys(ttys)
    dialogue.halt()
    return InstallResult(seconds=time.monotonic() - start, release=release)


__all__ = [
    "Console",
    "InstallResult",
    "InstallerChecksumFailed",
    "InstallerError",
    "InstallerExited",
    "InstallerNoAnswer",
    "InstallerStalled",
    "InstallerTimeout",
    "KERNEL_RELINK_KIT",
    "PER_MACHINE_FILES",
    "RC_CONF_LOCAL",
    "Timeouts",
    "Typing",
    "run_install",
]
