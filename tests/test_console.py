"""Console framing against a real local shell: status, output, stdin, and the failures' messages."""

import os
import shutil
import signal
import sys
import threading
import time

import pytest

from lab.channel_lock import ChannelLock
from lab.console import Console, Transcript
from lab.errors import CommandError, ConsoleBusy, ConsoleTimeout

SHELLS = [["/bin/sh", "-i"]]
if shutil.which("busybox"):
    SHELLS.append([shutil.which("busybox"), "sh", "-i"])  # the Linux appliance's shell


@pytest.fixture(params=SHELLS, ids=lambda argv: argv[0].rsplit("/", 1)[-1])
def console(request, tmp_path):
    c = Console("local", request.param, transcript=Transcript(tmp_path / "console"), raw_log=tmp_path / "raw")
    c.attach(10)
    yield c
    c.close()


def test_status_and_output_come_from_the_frame(console):
    r = console.run("echo out; echo err >&2; false")
    assert (r.status, r.output) == (1, "out\nerr\n")
    assert console.run("exit_with() { return $1; }; exit_with 42").status == 42


def test_output_that_looks_like_a_marker_or_prompt_is_just_output(console):
    r = console.run("printf '@@IKLE fake 0@@\\n# \\n$ \\nlogin: \\n'")
    assert r.output == "@@IKLE fake 0@@\n# \n$ \nlogin: \n"


def test_commands_do_not_read_the_console(console):
    r = console.run("cat")  # would hang for ever if stdin were the console
    assert r.ok and r.output == ""


def test_stdin_is_delivered_verbatim(console, tmp_path):
    text = "line one\n$HOME `date` 'quoted' \\back\n\ttab\n"
    target = tmp_path / "f"
    assert console.run(f"cat > {target}", stdin=text).ok
    assert target.read_text() == text


def test_many_commands_in_a_row_keep_in_step(console):
    for i in range(40):
        assert console.run(f"echo {i}").output == f"{i}\n"


def test_check_names_host_command_status_and_transcript(console):
    with pytest.raises(CommandError) as err:
        console.check("echo nope; (exit 3)")
    assert str(err.value).startswith("local: `echo nope; (exit 3)` exited 3: nope; transcript: ")


def test_timeout_names_what_did_not_happen(console):
    with pytest.raises(ConsoleTimeout) as err:
        console.run("sleep 5", timeout=0.5)
    message = str(err.value)
    assert message.startswith("local: no end of `sleep 5` within 0.5s")
    assert "transcript:" in message and message.endswith("local.log")
    assert console.run("echo still usable").output == "still usable\n"  # interrupted and resynchronised


def test_transcript_records_command_and_output(console, tmp_path):
    console.run("echo recorded")
    log = (tmp_path / "console" / "local.log").read_text()
    assert "local# echo recorded\nrecorded\n" in log
    assert "[local +" in (tmp_path / "console" / "all.log").read_text()


def test_transcripts_and_the_raw_log_keep_no_sa_key_but_the_caller_gets_it(console, tmp_path):
    key = "0x" + "5a17c0de" * 8
    r = console.run(f"printf '\\tenc cbc(aes) %s\\n' {key}")  # as `ip xfrm state` prints a key
    assert r.output == f"\tenc cbc(aes) {key}\n"  # the parsers need what the guest said
    console.close()  # the raw log writes its last held line
    for name in ("console/local.log", "console/all.log", "raw"):
        text = (tmp_path / name).read_text()
        assert "5a17c0de" not in text, name
        assert "enc cbc(aes) 0x[redacted]" in text, name
        assert (tmp_path / name).stat().st_mode & 0o077 == 0, f"{name} readable by others"


def test_stream_hands_output_over_as_it_comes_and_ends_on_ctrl_c(console):
    seen: list[str] = []
    pressed: list[bool] = []

    def out(text: str) -> None:
        seen.append(text)
        if "tick 3" in "".join(seen) and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt  # the learner presses Ctrl-C, once

    r = console.stream("i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done", out)
    assert r.status != 0 and "tick 1\ntick 2\ntick 3\n" in r.output
    assert "@@IKL" not in "".join(seen)
    assert console.run("echo after").output == "after\n"  # the shell is in step again


def test_stream_of_a_command_that_ends_by_itself(console):
    seen: list[str] = []
    r = console.stream("echo one; echo two; exit_with() { return $1; }; exit_with 3", seen.append)
    assert (r.status, "".join(seen)) == (3, "one\ntwo\n")


def test_output_streams_as_it_comes(console):
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    r = console.run("echo one; sleep 1; echo two", on_output=lambda t: seen.append((time.monotonic(), t)))
    assert r.output == "one\ntwo\n" and "".join(t for _, t in seen) == r.output
    first = next(at for at, text in seen if "one" in text)
    assert first - start < 0.9  # "one" arrived before the command ended, not with "two"


def test_ctrl_c_interrupts_the_guest_command_and_resyncs(console, tmp_path):
    marker = tmp_path / "finished"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        console.run(f"sleep 3 && touch {marker}")
    timer.cancel()
    assert console.run("echo next").output == "next\n"
    time.sleep(3)  # long enough for the sleep to have finished had it not been interrupted
    assert not marker.exists()


def test_a_second_user_of_a_control_channel_waits_and_is_told_for_whom(tmp_path):
    path = tmp_path / "locks" / "resp.console"
    first = ChannelLock(path, "resp")
    first.acquire()
    first.running("ping 10.0.2.2")
    said: list[str] = []
    with pytest.raises(ConsoleBusy) as busy:
        ChannelLock(path, "resp").acquire(timeout=0.3, on_wait=said.append)
    assert f"pid {os.getpid()}" in str(busy.value) and "running `ping 10.0.2.2`" in str(busy.value)
    assert said == [f"resp: waiting for the control console, in use by {busy.value.holder}"]
    threading.Timer(0.3, first.release).start()
    second = ChannelLock(path, "resp")
    second.acquire(timeout=5)  # waits for the first, then has it
    assert second.left_running is None  # the first ended cleanly
    second.running("sleep 100")
    # A holder killed mid-command leaves a note: the next one knows what may still run in the guest.
    second._file.close()  # as if its process died: the lock goes with the file
    second._file = None
    third = ChannelLock(path, "resp")
    third.acquire(timeout=1)
    assert third.left_running == "sleep 100"
    third.release()


def test_a_console_that_closes_says_so_in_one_line(tmp_path):
    """The process under a console dies (killed, or the guest went): one line, with what it last said."""
    from lab.console import Console
    from lab.errors import ConsoleError

    console = Console("init", ["/bin/sh", "-c", "printf 'booting\\n\\n'; exit 0"])
    with pytest.raises(ConsoleError) as err:
        console.wait_for("never", 10, "start of `true`")
    assert (
        str(err.value) == "init: the console closed while waiting for start of `true` (last output: booting)"
    )
    console.close()


def test_a_resumed_shell_is_proven_by_one_sync_line_without_waiting_for_a_prompt(console, tmp_path):
    """A restored guest's shell was saved in the known state (no prompt, no echo): a new console on it
    sends the sync line first instead of waiting for a prompt that never comes."""
    console.close()
    again = Console("local", ["/bin/sh", "-c", "stty -echo; PS1='' exec /bin/sh -i"], raw_log=tmp_path / "r2")
    sent: list[str] = []
    send = again._child.send
    again._child.send = lambda data: (sent.append(data), send(data))[1]
    again.attach(10, resumed=True)
    assert len(sent) == 1 and sent[0].startswith("printf") and "@@IKL" in sent[0]  # no program started
    assert again.run("echo ok").output == "ok\n"
    again.close()


def test_attaching_a_console_already_synced_is_one_sync_line(console):
    sent: list[str] = []
    send = console._child.send
    console._child.send = lambda data: (sent.append(data), send(data))[1]
    console.attach(10)  # `ikedlab up` prints the status table on the consoles it just used
    assert len(sent) == 1 and "@@IKL" in sent[0]


def test_a_shell_left_in_the_known_state_answers_enter_with_a_prompt(console):
    """The next process's attach sees the shell at once, instead of waiting out its prompt timeout."""
    from lab.console import _PROMPT

    console.send_line("")
    console.wait_for(_PROMPT, 5, "the control shell's prompt")
    assert console.run("echo still in step").output == "still in step\n"


def test_nothing_is_typed_before_the_console_program_is_connected(tmp_path):
    """virsh console drops what it reads while it connects: a carrier that dies of early input stands in."""
    carrier = (
        "import os, select, sys\n"
        "if select.select([0], [], [], 0.5)[0]: sys.exit(3)\n"
        "print('Connected to domain; Escape character is ^]', flush=True)\n"
        "os.execvp('sh', ['sh', '-i'])\n"
    )
    c = Console("local", [sys.executable, "-c", carrier], connected="Escape character is")
    try:
        c.attach(10)
        assert c.run("echo through").output == "through\n"
    finally:
        c.close()
