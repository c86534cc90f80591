"""docs/walkthrough.md, run: the guide's steps as the walkthrough shows them, each command on its host and
each line it promises looked for in the output. A change that makes the document wrong fails here."""

import pytest

from lab import walkthrough

STEPS = walkthrough.load()


@pytest.mark.parametrize("step", STEPS, ids=lambda s: f"line{s.line}-{s.host}")
def test_walkthrough(lab, step):
    host = lab.host(step.host)
    if step.platform and host.platform.name != step.platform:
        pytest.skip(
            f"docs/walkthrough.md:{step.line} shows a {step.platform} lab's output; {host.name} runs "
            f"{host.platform.name}"
        )
    where = f"docs/walkthrough.md:{step.line} ({step.title})"
    result = host.run(step.command, timeout=60)
    assert result.ok, f"{where}: `{step.command}` on {host.name} exited {result.status}:\n{result.output}"
    absent = walkthrough.missing(step, result.output)
    assert not absent, (
        f"{where}: `{step.command}` on {host.name} did not show:\n  "
        + "\n  ".join(absent)
        + f"\n--- it printed:\n{result.output}"
    )
