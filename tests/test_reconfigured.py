"""`with lab.reconfigured(...)`: the lab changed for a block, and put back unless Ctrl-C stops the run."""

import pytest

from lab.lab import Lab
from lab.provision import Options


class RecordingLab(Lab):
    def __init__(self, tmp_path):
        super().__init__("recon", run_dir=tmp_path)
        self.events: list[str] = []
        self.options = Options(dpd_interval=None)

    def restore(self) -> None:
        self.events.append(f"restore dpd={self.options.dpd_interval} any={self.options.peer_any}")


def test_changes_apply_inside_and_are_undone_after(tmp_path):
    lab = RecordingLab(tmp_path)
    with lab.reconfigured(
        prepare=lambda: lab.events.append("prepare"), undo=lambda: lab.events.append("undo"), dpd_interval=5
    ):
        assert lab.options.dpd_interval == 5
        lab.events.append("block")
    assert lab.options.dpd_interval is None
    assert lab.events == ["prepare", "restore dpd=5 any=()", "block", "undo", "restore dpd=None any=()"]


def test_without_option_changes_only_the_way_back_restores(tmp_path):
    lab = RecordingLab(tmp_path)
    with lab.reconfigured(prepare=lambda: lab.events.append("prepare")):
        pass
    assert lab.events == ["prepare", "restore dpd=None any=()"]


def test_a_failing_block_still_puts_the_lab_back(tmp_path):
    lab = RecordingLab(tmp_path)
    with pytest.raises(ZeroDivisionError) as failed, lab.reconfigured(peer_any=("resp",), undo=lambda: 1 / 0):
        raise RuntimeError("scenario failed")
    assert isinstance(failed.value.__context__, RuntimeError)  # the scenario's failure is reported too
    assert lab.options.peer_any == ()
    assert lab.events[-1] == "restore dpd=None any=()"  # undo failed, the restore ran all the same


def test_an_unknown_option_is_refused_before_anything_changes(tmp_path):
    lab = RecordingLab(tmp_path)
    with pytest.raises(TypeError), lab.reconfigured(dpd=5):
        pass
    assert lab.options == Options(dpd_interval=None) and lab.events == []


def test_after_ctrl_c_the_lab_is_not_put_back_the_process_takes_it_down(tmp_path, capsys):
    import os
    import signal

    from lab import interrupts

    lab = RecordingLab(tmp_path)
    with pytest.raises(KeyboardInterrupt), interrupts.guarded():
        with lab.reconfigured(undo=lambda: lab.events.append("undo"), dpd_interval=5):
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("Ctrl-C did not interrupt the block")
    assert lab.events == ["restore dpd=5 any=()"]  # the change only: no undo, no restore on the way out
    assert lab.options.dpd_interval is None
    assert capsys.readouterr().err.splitlines() == [interrupts.STOPPING]
    assert not interrupts.stopping()  # the guard is gone with its block
