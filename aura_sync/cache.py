"""Deprecated location of the epoch-floor tracker (the Rust design's legacy cache).

``aura_sync.cache.CacheEpochFloors`` is the old name of
:class:`aura_sync.infrastructure.CacheEpochTracker`; accessing it works but
emits a :class:`DeprecationWarning` that names the replacement::

    # old
    from aura_sync.cache import CacheEpochFloors
    # new
    from aura_sync.infrastructure import CacheEpochTracker

This module will be removed in a future release.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers see the alias; at run time __getattr__ warns
    from aura_sync.infrastructure.cache import CacheEpochTracker as CacheEpochFloors

__all__ = ["CacheEpochFloors"]

_DEPRECATED = {
    "CacheEpochFloors": (
        "CacheEpochTracker",
        "aura_sync.cache.CacheEpochFloors is deprecated; use "
        "aura_sync.infrastructure.CacheEpochTracker instead",
    ),
}


def __getattr__(name: str) -> object:
    entry = _DEPRECATED.get(name)
    if entry is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    replacement, text = entry
    warnings.warn(text, DeprecationWarning, stacklevel=2)
    from aura_sync.infrastructure import cache

    return getattr(cache, replacement)


def __dir__() -> list[str]:
    return sorted([*globals(), *_DEPRECATED])
