"""13. The learner's console never blocks ikedlab.

A learner following the guide runs `iked -dv` in the foreground on `ikedlab console resp`, or a ping that
never ends. ikedlab's own commands use a serial port of their own, so `ikedlab exec resp -- ikectl show sa`
and the scenarios' readings keep working while that command runs.
"""

import subprocess
import sys

import pexpect
from guide import guide


def learner_console(lab, host):
    """`ikedlab console HOST` as a learner has it: the first serial port, logged in, at a prompt."""
    domain = next(d.name for d in lab.domains() if d.host == host.name)
    argv = lab.hypervisor.console_argv(domain, learner=True)
    child = pexpect.spawn(argv[0], argv[1:], timeout=30)
    login = host.platform.login
    for _ in range(6):
        child.send("\r")
        seen = child.expect([r"[Ll]ogin: ", login.password_prompt, r"# ", pexpect.TIMEOUT], timeout=5)
        if seen == 0:
            child.send(f"{login.user}\r")
        elif seen == 1:
            child.send(f"{login.password}\r")
        elif seen == 2:
            return child
    child.close(force=True)
    raise AssertionError(f"no shell prompt on {host.name}'s learner console (last output: {child.before!r})")


def test_a_command_left_on_the_learner_console_blocks_nothing(lab):
    g = guide(lab)
    learner = learner_console(lab, g.resp)
    try:
        learner.send(f"ping {g.address(g.resplan)}\r")  # no count: it runs until someone presses Ctrl-C
        learner.expect(r"bytes from", timeout=30)

        assert g.resp.sas().established  # the scenarios' own channel

        with lab.lent(g.resp.name):  # and `ikedlab exec`, a process of its own
            ikedlab = [sys.executable, "-m", "lab", "--name", lab.name]
            done = subprocess.run(
                [*ikedlab, "exec", "resp", "--", "ikectl", "show", "sa"],
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert done.returncode == 0, done.stderr
        assert "ESTABLISHED" in done.stdout

        learner.expect(r"bytes from", timeout=10)  # the learner's ping ran on, untouched
    finally:
        learner.sendintr()
        learner.close(force=True)
