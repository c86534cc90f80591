"""The wheel carries everything `up` needs: every file of the package, not only its modules (image recipes,
the Linux appliance's rootfs and init, OpenBSD's keys and install.conf template, templates, topologies,
platform data), executables still executable, and the entry points of the command and the pytest plugin.

Built from a copy of the package in a temporary folder (no build/ left in the checkout), without build
isolation (no registry needed). The whole path from a fresh venv (`scripts/check-installed.sh`) boots a lab
and runs in `make nightly`."""

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "lab", "images")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    tree = tmp_path_factory.mktemp("tree")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*pip, "-w", str(out), "."], cwd=tree, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("ikedlab-*.whl")
    return zipfile.ZipFile(built)


def _package_files() -> list[str]:
    """Every file of the package as the checkout has it (git's own list when there is one)."""
    done = subprocess.run(["git", "ls-files", "lab", "images"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode == 0 and done.stdout.strip():
        files = done.stdout.split()
    else:
        files = [
            str(p.relative_to(ROOT)) for d in ("lab", "images") for p in (ROOT / d).rglob("*") if p.is_file()
        ]
    return sorted(in_wheel(f) for f in files if "__pycache__" not in f and (ROOT / f).exists())


def in_wheel(path: str) -> str:
    """Where a checkout's file travels in the wheel: images/ as lab/images/recipes/ (package-dir)."""
    return re.sub(r"^images/", "lab/images/recipes/", path)


def in_checkout(name: str) -> Path:
    return ROOT / re.sub(r"^lab/images/recipes/", "images/", name)


def test_the_wheel_holds_every_file_of_the_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    missing = [f for f in _package_files() if f not in names]
    assert not missing, f"not in the wheel: {missing}"
    for needed in (
        "lab/images/recipes/linux/recipe.yaml",
        "lab/images/recipes/linux/init",
        "lab/images/recipes/linux/rootfs/usr/local/sbin/ipsecctl",
        "lab/images/recipes/openbsd/install.conf.j2",
        "lab/images/recipes/openbsd/keys/openbsd-75-base.pub",
        "lab/templates/domain.xml.j2",
        "lab/topologies/guide.yaml",
        "lab/platforms/linux.yaml",
        "lab/exercises/library/wrong-srcid/exercise.yaml",
    ):
        assert needed in names


def test_executables_stay_executable(wheel: zipfile.ZipFile) -> None:
    for info in wheel.infolist():
        source = in_checkout(info.filename)
        if info.filename.startswith("lab/") and source.is_file() and source.stat().st_mode & 0o111:
            assert (info.external_attr >> 16) & 0o111, f"{info.filename} lost its executable bit"


def test_the_command_and_the_pytest_plugin_are_entry_points(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    points = configparser.ConfigParser()
    points.read_string(wheel.read(name).decode())
    assert points["console_scripts"]["ikedlab"] == "lab.cli:main"
    assert points["pytest11"]["ikedlab"] == "lab.pytest_plugin"


def test_pytest_help_lists_the_plugins_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    for option in ("--platform", "--lab-name", "--topology", "--keep-lab", "--artifacts"):
        assert option in done.stdout
