"""Ctrl-C during `up`, once and twice: `up` exits promptly and leaves no domain and no state of the lab."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from faultkit import CHECKOUT, assert_nothing_left, domains, ikedlab, lab_name, wait_for

from lab.interrupts import STILL_CLEANING, STOPPING

GUESTS_CREATED = "✓ boot:"  # the first boot step is done: every domain exists, guests are booting
EXIT_DEADLINE = 60.0  # from the last Ctrl-C to exit: cleanup destroys five domains


class Up:
    """`ikedlab up` in the background, as a user's terminal runs it, with its stderr read as it comes."""

    def __init__(self, lab: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lab", "--name", lab, "up", "--platform", "linux"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=CHECKOUT,
            env=dict(os.environ),
            # A terminal's Ctrl-C, even when this suite runs where SIGINT is ignored (a background job, CI).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"`up` still ran {timeout:g}s after Ctrl-C; it said:\n" + "\n".join(self.lines))
        finally:
            self._reader.join(5)


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_while_guests_boot_leaves_nothing(presses: int, state_dir: Path) -> None:
    lab = lab_name(f"c{presses}")
    ikedlab("--name", lab, "down")  # what a dead run of this checkout may have left
    up = Up(lab)
    try:
        wait_for(
            "`up` creating the guests", lambda: up.saw(GUESTS_CREATED) or up.process.poll() is not None, 300
        )
        assert up.process.poll() is None, "`up` ended before it was interrupted:\n" + "\n".join(up.lines)
        assert len(domains(lab)) == 5
        for press in range(presses):
            if press:
                time.sleep(1.0)  # a person pressing again because nothing seemed to happen
            up.interrupt()
        code = up.wait(EXIT_DEADLINE)
    finally:
        if up.process.poll() is None:
            up.process.kill()
        left = domains(lab)
        if left:  # asserted below; removed here so that the next run starts clean
            ikedlab("--name", lab, "down", "--force")
    said = "\n".join(up.lines)
    assert code == 130, said
    assert "Traceback" not in said, said
    assert up.lines.count(STOPPING) == 1, said  # said once, at the first Ctrl-C
    assert presses == 2 or STILL_CLEANING not in said, said
    assert left == [], f"domains left behind: {left}"
    assert_nothing_left(lab, state_dir)
