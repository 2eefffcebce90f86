"""The :class:`Message` base, the ``@message(tag)`` decorator and the tag registry.

A message is an immutable dataclass (``frozen=True, slots=True``) whose fields
are msgpack-representable: ``int``, ``float``, ``str``, ``bytes``, ``bool``,
``None``, ``tuple[X, ...]`` and fixed ``tuple[A, B]``, enums,
:class:`~aura_sync.ids.DeviceId`, other messages, ``X | None`` and unions of
message types.  No dicts or lists: immutable all the way down.

Each class is declared with a wire tag that is unique across the project;
``@message(tag)`` registers it and fails at import time on a duplicate::

    @message(0x21)
    class CheckRateLimit(Message):
        peer_id: DeviceId
        cost: int = 1

        def __post_init__(self) -> None:   # validation lives here, once
            check_cost(self.cost)

Validation belongs in ``__post_init__`` so that a message built in code and a
message decoded from bytes go through the same checks.

Layer: messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

__all__ = ["Message", "message", "registered_messages"]

M = TypeVar("M", bound="Message")

_REGISTRY: dict[int, type[Message]] = {}

TAG_MAX = 0xFFFF


class Message:
    """Base class of every typed, immutable message.

    Subclasses are declared with :func:`message`, which makes them frozen,
    slotted dataclasses and gives them their wire ``TAG``.
    """

    __slots__ = ()
    TAG: ClassVar[int] = 0
    # Filled in lazily by the codec: (to-wire, from-wire) functions for this class,
    # and its whole encoded frame when that is a constant (a message without fields).
    _aura_codec: ClassVar[
        tuple[Callable[[Any], Any], Callable[[Any], Any], bytes | None] | None
    ] = None


@dataclass_transform(frozen_default=True)
def message(tag: int) -> Callable[[type[M]], type[M]]:
    """Declare a message class with wire tag ``tag`` (1..65535, unique project-wide).

    Applies ``@dataclass(frozen=True, slots=True)`` and registers the class.
    A duplicate tag raises :class:`TypeError` at import time.
    """
    if type(tag) is not int or not 0 < tag <= TAG_MAX:
        raise TypeError(f"message tag must be an int in 1..{TAG_MAX}, got {tag!r}")

    def register(cls: type[M]) -> type[M]:
        if not issubclass(cls, Message):
            raise TypeError(f"@message needs a Message subclass, got {cls!r}")
        existing = _REGISTRY.get(tag)
        if existing is not None:
            raise TypeError(
                f"duplicate message tag {tag:#06x}: {cls.__module__}.{cls.__qualname__} "
                f"and {existing.__module__}.{existing.__qualname__}"
            )
        new_cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
        new_cls.TAG = tag
        new_cls._aura_codec = None
        _REGISTRY[tag] = new_cls
        return new_cls

    return register


def registered_messages() -> dict[int, type[Message]]:
    """A copy of the tag registry: tag -> message class."""
    return dict(_REGISTRY)
