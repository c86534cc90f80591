"""The fault suite: labs broken on purpose. Each fault must give one clear line and leave nothing behind.

Its own folder, not scenarios/: scenarios/conftest.py boots the guide's lab for every test there and puts it
back after each, while these tests break labs (and the Ctrl-C ones start their own `up`). Each run uses a
state directory of its own, so "nothing left" is checked exactly; labs are named after the checkout, so two
checkouts' fault suites never meet. Every test here is marked `fault`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This run's own IKEDLAB_STATE_DIR, for the subprocesses and for Lab objects made in this process."""
    path = tmp_path_factory.mktemp("state")
    before = os.environ.get("IKEDLAB_STATE_DIR")
    os.environ["IKEDLAB_STATE_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("IKEDLAB_STATE_DIR", None)
    else:
        os.environ["IKEDLAB_STATE_DIR"] = before
