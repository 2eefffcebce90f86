"""The :class:`Message` and :class:`Request` bases, ``@message(tag)`` and the tag registry.

A message is a frozen, slotted dataclass of msgpack-representable fields,
registered under a wire tag unique project-wide (a duplicate fails at import).
A :class:`Request` names its reply type (``class GetPeerRate(Request[float])``),
so one declaration is the whole operation.  Messages do not validate
themselves: the codec checks field types at the wire, the cores check values.
This module sits below the cores, so a core's frozen value can be a reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, dataclass_transform

__all__ = ["Message", "Request", "message", "registered_messages"]

M = TypeVar("M", bound="Message")
R_co = TypeVar("R_co", covariant=True)

_REGISTRY: dict[int, type[Message]] = {}

TAG_MAX = 0xFFFF


class Message:
    """Base class of every typed, immutable message (declared with :func:`message`)."""

    __slots__ = ()
    TAG: ClassVar[int] = 0
    _aura_codec: ClassVar[Any] = None  # the codec's encoder/decoder pair, built on first use


class Request(Message, Generic[R_co]):
    """A message asking for a reply of type ``R_co``: ``address.call(request, timeout)``
    returns it (``Ack`` as None) or raises the exception of an error reply."""

    __slots__ = ()


@dataclass_transform(frozen_default=True)
def message(tag: int) -> Callable[[type[M]], type[M]]:
    """Make ``cls`` a frozen, slotted dataclass with wire tag ``tag`` (1..65535) and register
    it; a duplicate tag raises :class:`TypeError` at import time."""
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
        if "__init__" in cls.__dict__:  # the codec builds instances as the dataclass does
            raise TypeError(f"message {cls.__qualname__} must not define __init__")
        new_cls = dataclasses.dataclass(frozen=True, slots=True)(cls)
        if any(not f.init for f in dataclasses.fields(new_cls)):  # type: ignore[arg-type]
            raise TypeError(f"message {cls.__qualname__}: every field must be an init field")
        new_cls.TAG = tag
        new_cls._aura_codec = None
        _REGISTRY[tag] = new_cls
        return new_cls

    return register


def registered_messages() -> dict[int, type[Message]]:
    """A copy of the tag registry: tag -> message class."""
    return dict(_REGISTRY)
