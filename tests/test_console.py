"""Console framing against a real local shell: status, output, stdin, and the failures' messages."""

import shutil

import pytest

from lab.console import Console, Transcript
from lab.errors import CommandError, ConsoleTimeout

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
