"""Work on every host (domain, host name) of a lab at once: one thread each, the first failure raised after
all finish, naming its item."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from lab.errors import IkedlabError, ProvisionError

T = TypeVar("T")


def in_parallel(items: Iterable[T], action: Callable[[T], object]) -> None:
    """Run `action` on each item (hosts, domains, host names) at once; raise the first failure, naming
    its item, after all finish."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = [(item, pool.submit(action, item)) for item in items]
    errors = [(item, f.exception()) for item, f in futures if f.exception()]
    if errors:
        item, error = errors[0]
        if isinstance(error, IkedlabError):
            raise error
        raise ProvisionError(f"{getattr(item, 'name', item)}: {type(error).__name__}: {error}") from error
