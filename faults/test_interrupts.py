"""Ctrl-C during `up` and during a scenario run, once and twice: said at once, the process exits promptly
and leaves no domain and no state of the lab."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import CHECKOUT, assert_nothing_left, domains, ikedlab, lab_name, wait_for

from lab.interrupts import STILL_CLEANING, STOPPING

GUESTS_CREATED = "✓ boot:"  # the first boot step is done: every domain exists, guests are booting
EXIT_DEADLINE = 60.0  # from the last Ctrl-C to exit: cleanup destroys five domains


class Terminal:
    """A command in the background, as a user's terminal runs it, with what it says read as it comes."""

    def __init__(self, argv: list[str], with_stdout: bool = False) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if with_stdout else subprocess.PIPE,
            text=True,
            cwd=CHECKOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},  # its own lab name
            # A terminal's Ctrl-C, even when this suite runs where SIGINT is ignored (a background job, CI).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        said = self.process.stdout or self.process.stderr
        assert said
        for line in said:
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
            pytest.fail(f"still running {timeout:g}s after Ctrl-C; it said:\n" + "\n".join(self.lines))
        finally:
            self._reader.join(5)

    def press_ctrl_c(self, presses: int) -> None:
        """Ctrl-C, and again once the first was said: a person pressing twice because cleanup takes long."""
        for press in range(presses):
            if press:
                wait_for("the first Ctrl-C said", lambda: self.saw(STOPPING), EXIT_DEADLINE)
            self.interrupt()

    def stopped(self, lab: str) -> list[str]:
        """Make sure the process is gone; the lab's domains it left, removed so the next run starts clean."""
        if self.process.poll() is None:
            self.process.kill()
        left = domains(lab)
        if left:  # the caller asserts there are none
            ikedlab("--name", lab, "down", "--force")
        return left

    def assert_stopped_cleanly(self, code: int, expected: int, presses: int, left: list[str]) -> None:
        said = "\n".join(self.lines)
        assert code == expected, said
        assert "Traceback" not in said, said
        assert self.lines.count(STOPPING) == 1, said  # said once, at the first Ctrl-C
        assert presses == 2 or STILL_CLEANING not in said, said
        assert left == [], f"domains left behind: {left}"


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_while_guests_boot_leaves_nothing(presses: int, state_dir: Path) -> None:
    lab = lab_name(f"c{presses}")
    ikedlab("--name", lab, "down")  # what a dead run of this checkout may have left
    up = Terminal([sys.executable, "-m", "lab", "--name", lab, "up", "--platform", "linux"])
    try:
        wait_for(
            "`up` creating the guests", lambda: up.saw(GUESTS_CREATED) or up.process.poll() is not None, 300
        )
        assert up.process.poll() is None, "`up` ended before it was interrupted:\n" + "\n".join(up.lines)
        assert len(domains(lab)) == 5
        up.press_ctrl_c(presses)
        code = up.wait(EXIT_DEADLINE)
    finally:
        left = up.stopped(lab)
    up.assert_stopped_cleanly(code, 130, presses, left)
    assert_nothing_left(lab, state_dir)


# Scenario 6 changes the lab for its whole length (a wrong key on resp, inside `lab.reconfigured`): Ctrl-C
# there used to put the lab back from its snapshot (a restore of 10-20 s) before taking it down.
SCENARIO = "scenarios/test_6_wrong_key.py::test_wrong_public_key_means_no_tunnel"
LAB_CHANGED = "openssl ecparam"  # the scenario's first command: from here on the lab is changed
RESTORE_STEP = "… restore:"  # warm.restore's step, as progress prints it
PYTEST_INTERRUPTED = 2  # pytest's exit status after Ctrl-C


@pytest.fixture(scope="module")
def scenario_lab() -> Iterator[str]:
    """The scenario runs' lab name; its warm snapshot (the second run restores it) goes with the module."""
    lab = lab_name("s")
    ikedlab("--name", lab, "down", "--snapshots")  # what a dead run of this checkout may have left
    yield lab
    ikedlab("--name", lab, "down", "--force", "--snapshots")


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_in_a_scenario_run_stops_at_once_and_leaves_nothing(
    presses: int, scenario_lab: str, state_dir: Path, tmp_path: Path
) -> None:
    lab = scenario_lab
    transcript = state_dir / "labs" / lab / "console" / "all.log"
    transcript.unlink(missing_ok=True)  # the previous run's
    run = Terminal(
        [sys.executable, "-u", "-m", "pytest", SCENARIO, "-v", "-s", "--platform", "linux"]
        + ["--lab-name", lab, "--artifacts", str(tmp_path / "artifacts")],
        with_stdout=True,
    )
    try:
        wait_for(
            "the scenario changing the lab",
            lambda: (
                (transcript.exists() and LAB_CHANGED in transcript.read_text(errors="replace"))
                or run.process.poll() is not None
            ),
            600,  # a cold up (the first run in this state directory), its snapshot saved and restored
        )
        assert run.process.poll() is None, "the run ended before it was interrupted:\n" + "\n".join(run.lines)
        pressed = time.monotonic()
        run.press_ctrl_c(presses)
        code = run.wait(EXIT_DEADLINE)
        print(f"exited {time.monotonic() - pressed:.1f}s after the first Ctrl-C")
    finally:
        left = run.stopped(lab)
    run.assert_stopped_cleanly(code, PYTEST_INTERRUPTED, presses, left)
    after = run.lines[next((i for i, line in enumerate(run.lines) if STOPPING in line), 0) :]
    assert not any(RESTORE_STEP in line for line in after), (
        "the lab was put back before going down:\n" + "\n".join(run.lines)
    )
    assert_nothing_left(lab, state_dir)
