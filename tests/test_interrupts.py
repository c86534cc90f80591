"""Ctrl-C during `up`: said at once, cleanup that a second Ctrl-C cannot cut short; the console's noise."""

import os
import signal
import subprocess
import sys

import pytest

from lab import cli, interrupts


def test_first_ctrl_c_says_so_and_interrupts_then_cleanup_is_shielded(capsys):
    cleaned = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.guarded():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                raise AssertionError("the first Ctrl-C did not interrupt")
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C during cleanup...
                cleaned.append("all")  # ...does not stop it
                raise
    said = capsys.readouterr().err.splitlines()
    assert said == [interrupts.STOPPING, f"  {interrupts.STILL_CLEANING}"]
    assert cleaned == ["all"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was


def test_a_cleanup_after_a_failure_is_shielded_too(capsys):
    with pytest.raises(ValueError):
        with interrupts.guarded() as guard:
            try:
                raise ValueError("iked gave up")
            except ValueError:
                guard.shield()
                os.kill(os.getpid(), signal.SIGINT)  # ignored: the cleanup goes on
                raise
    assert capsys.readouterr().err.strip() == interrupts.STILL_CLEANING


def test_the_learner_console_passes_errors_but_not_polkits_noise(tmp_path):
    script = tmp_path / "virsh"
    script.write_text(
        "#!/bin/sh\n"
        "echo 'Authorization not available. Check if polkit service is running or see debug message' >&2\n"
        "echo 'error: operation failed: Active console session exists for this domain' >&2\n"
        "exit 1\n"
    )
    script.chmod(0o755)
    code = f"import sys; from lab import cli; sys.exit(cli._console_session([{str(script)!r}]))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cli.__file__.rsplit("/lab/", 1)[0]
    )
    assert done.returncode == 1
    assert done.stderr == "error: operation failed: Active console session exists for this domain\n"


def test_a_guard_inside_another_shares_its_ctrl_c(capsys):
    """A scenario session's `up`: the first Ctrl-C is said once, wherever it lands; a shield raised for a
    failed inner block ends with it, one raised by Ctrl-C stays."""
    with interrupts.guarded() as outer:
        with pytest.raises(ValueError), interrupts.guarded() as inner:
            assert inner is outer
            inner.shield()
            raise ValueError("up failed, cleaned up")
        assert not outer.shielded and not interrupts.stopping()
        with pytest.raises(KeyboardInterrupt), interrupts.guarded():
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("the first Ctrl-C did not interrupt")
        assert outer.shielded and interrupts.stopping()
        os.kill(os.getpid(), signal.SIGINT)  # the session's cleanup goes on
    said = capsys.readouterr().err.splitlines()
    assert said == [interrupts.STOPPING, f"  {interrupts.STILL_CLEANING}"]
    assert not interrupts.stopping()
