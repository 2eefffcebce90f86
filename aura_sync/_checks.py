"""Shared argument checks for every layer (internal).

Layer: values.  Imports only :mod:`aura_sync.errors` and :mod:`aura_sync.ids`,
so cores, messages, actors, supervisors and the runtime may all use it.

Each check takes the value and the argument's ``name``, returns the value
(converted where documented) and raises an :mod:`aura_sync.errors` exception
whose message names the argument and shows the offending value:
:class:`~aura_sync.errors.WrongType` for a value of the wrong type and
:class:`~aura_sync.errors.InvalidArgument` for one out of range.

Related checks living elsewhere: :func:`aura_sync.ids.check_epoch` (an epoch,
``0 .. 2**64-1``) and :func:`aura_sync.effects.check_seconds` (a non-negative
duration in seconds).  Checks whose rules belong to one module (cache keys,
addresses, op ids...) stay in that module.
"""

from __future__ import annotations

import math
from typing import Final

from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId

__all__ = ["U64_MAX", "check_bool", "check_clock_time", "check_int", "check_peer", "check_u64"]

U64_MAX: Final = 2**64 - 1
"""The largest unsigned 64-bit integer (the top of every wire counter)."""


def check_int(
    value: object, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` if it is an ``int`` within the given bounds.

    Args:
        value: the argument to check.
        name: the argument's name, used in the error message.
        minimum: the smallest accepted value (inclusive), or ``None`` for no lower bound.
        maximum: the largest accepted value (inclusive), or ``None`` for no upper bound.

    Returns:
        ``value``, unchanged.

    Raises:
        WrongType: ``value`` is not exactly an ``int`` (``bool`` is rejected).
        InvalidArgument: ``value`` is below ``minimum`` or above ``maximum``; the
            message reads ``"<name> must be in <minimum>..<maximum>, got <value>"``
            (or ``">= <minimum>"`` / ``"<= <maximum>"`` with one bound).
    """
    if type(value) is not int:
        raise WrongType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            bound = f">= {minimum}"
        elif minimum is None:
            bound = f"<= {maximum}"
        else:
            bound = f"in {minimum}..{maximum}"
        raise InvalidArgument(f"{name} must be {bound}, got {value}")
    return value


def check_u64(value: object, name: str, *, minimum: int = 0) -> int:
    """Return ``value`` if it is an ``int`` in ``minimum .. 2**64-1`` (a wire counter or id).

    Args:
        value: the argument to check.
        name: the argument's name, used in the error message.
        minimum: the smallest accepted value (inclusive; default 0).

    Returns:
        ``value``, unchanged.

    Raises:
        WrongType: ``value`` is not exactly an ``int`` (``bool`` is rejected).
        InvalidArgument: ``value`` is outside ``minimum .. 2**64-1``; the message
            reads ``"<name> must be in <minimum>..2**64-1, got <value>"``.
    """
    if type(value) is not int:
        raise WrongType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not minimum <= value <= U64_MAX:
        raise InvalidArgument(f"{name} must be in {minimum}..2**64-1, got {value}")
    return value


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is exactly a ``bool``.

    Raises:
        WrongType: ``value`` is anything else (``0`` and ``1`` included).
    """
    if type(value) is not bool:
        raise WrongType(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_clock_time(value: object, name: str) -> float:
    """Return ``value`` as a clock reading: finite seconds as a ``float``.

    A clock reading (``Clock.now()`` seconds) may be any finite number, zero or
    negative included; an ``int`` is accepted and converted.

    Returns:
        ``float(value)``.

    Raises:
        WrongType: ``value`` is not an ``int`` or ``float`` (``bool`` is rejected).
        InvalidArgument: ``value`` is NaN, infinite, or an ``int`` too large for a float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be clock seconds, got {type(value).__name__} {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidArgument(f"{name} must be finite clock seconds, got {value!r}")
    return seconds


def check_peer(value: object, name: str = "peer_id") -> DeviceId:
    """Return ``value`` if it is exactly a :class:`~aura_sync.ids.DeviceId`.

    For any device identity argument: a peer, an op's author, a device; ``name``
    defaults to ``"peer_id"``.

    Raises:
        WrongType: ``value`` is anything else (raw bytes included).
    """
    if type(value) is not DeviceId:
        raise WrongType(f"{name} must be a DeviceId, got {type(value).__name__} {value!r}")
    return value
