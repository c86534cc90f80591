"""`ikedlab bisect` on a real iked tree: Debian's openiked source (trixie's 7.4, fetched through a private apt
state) in a fresh git repository of six commits, the fourth of which makes iked.conf's `transport` mean
tunnel mode. The catalogue's `transport` case catches it (measured: the peers no longer agree,
"authentication failed for FQDN/right-from-ca-both" in its first step), and bisect must name that commit with
the case's failing line. Each step builds iked and brings the lab up from its booted base with the build:
3 steps of 91-123 s at load 5-8."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab import PROJECT_ROOT
from lab.images import default_cache_dir
from lab.images.iked_build import debian_source
from lab.ownership import checkout_tag

LAB = f"bis-{checkout_tag()}"
REGRESSION = (
    "iked/parse.y",
    "| TRANSPORT\t\t\t{ $$ = IKED_POLICY_TRANSPORT; }",
    "| TRANSPORT\t\t\t{ $$ = 0; }",
)


def commit(repo: Path, message: str) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout

    git("add", "-A")
    git("commit", "-q", "-m", message)
    return git("rev-parse", "HEAD").strip()


def history(repo: Path) -> list[str]:
    """Six commits over the tree; the fourth brings the regression."""
    source = debian_source(default_cache_dir() / "bisect-source")
    shutil.copytree(source, repo, ignore=shutil.ignore_patterns(".pc"))
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for key, value in (("user.email", "bisect@example.invalid"), ("user.name", "bisect test")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    shas = [commit(repo, "openiked 7.4 as Debian ships it")]
    readme = repo / "README.md"
    for i in (1, 2):
        readme.write_text(readme.read_text() + f"\nA harmless change, {i}.\n")
        shas.append(commit(repo, f"harmless change {i}"))
    path, good, bad = REGRESSION
    text = (repo / path).read_text()
    assert good in text, f"{path} no longer has the line the regression changes"
    (repo / path).write_text(text.replace(good, bad))
    shas.append(commit(repo, "parse.y: transport mode keyword (the regression)"))
    for i in (3, 4):
        readme.write_text(readme.read_text() + f"\nA harmless change, {i}.\n")
        shas.append(commit(repo, f"harmless change {i}"))
    return shas


def test_bisect_names_the_commit_that_broke_transport_mode(tmp_path: Path) -> None:
    repo = tmp_path / "openiked"
    shas = history(repo)
    argv = [
        sys.executable, "-m", "lab", "--name", LAB, "bisect", "--source", str(repo),
        "--good", shas[0], "--bad", shas[-1], "--case", "transport", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600, env=os.environ
        )
    finally:
        subprocess.run([sys.executable, "-m", "lab", "--name", LAB, "down", "--snapshots"], cwd=PROJECT_ROOT)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert f"first bad commit: {shas[3]} parse.y: transport mode keyword (the regression)" in said, said
    failure = said.split("its failure:", 1)[1].splitlines()[0].strip()
    assert failure.startswith("steps["), (
        said
    )  # the case's own failing line (a step, its host and what it found)
    steps = sorted((tmp_path / "out").glob(f"*-{shas[3][:12]}"))
    assert steps and (steps[-1] / "verdict.txt").read_text().startswith(f"{shas[3]} bad"), said
