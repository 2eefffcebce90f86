"""The msgpack codec: ``encode(msg) -> bytes`` and ``decode(data) -> Message``.

Wire format: a message is a msgpack array ``[tag, field1, field2, ...]`` in
dataclass field order.  ``DeviceId`` is a 16-byte bin, an enum is its value, a
nested message is its own array, a tuple is an array.

``decode`` treats its input as untrusted: on any input it either returns a
valid message or raises :class:`~aura_sync.errors.DecodeError` saying what was
wrong (bad msgpack, frame over the size limit, unknown tag, wrong arity, wrong
field type, value out of range).  Nothing else escapes from it.

Per-class encoders and decoders are generated once, on first use, from the
dataclass's type hints; the generated code inlines the checks for plain
fields so that the hot path is one msgpack call plus a few ``type() is``
tests.

Layer: messages.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
import typing
from collections.abc import Callable
from typing import Any, Final

import msgpack

from aura_sync.errors import AuraError, DecodeError, InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.messages._base import _REGISTRY, Message

_REGISTRY_GET = _REGISTRY.get

__all__ = ["MAX_FRAME_SIZE", "decode", "encode", "from_wire", "to_wire"]

MAX_FRAME_SIZE: Final = 1 << 20
"""Default maximum size of one encoded message, in bytes (1 MiB)."""

_Conv = Callable[[Any], Any]
_unpackb = msgpack.unpackb


def encode(msg: Message, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """Serialize ``msg`` to msgpack bytes.

    Raises :class:`~aura_sync.errors.InvalidArgument` if ``msg`` is not a
    registered message or the encoding exceeds ``max_size`` bytes.
    """
    try:
        codec = msg._aura_codec
    except AttributeError:
        raise InvalidArgument(f"encode needs a Message, got {type(msg).__name__} {msg!r}") from None
    if codec is None:
        codec = _compile(type(msg))
    try:
        pack = _tls.pack
    except AttributeError:
        pack = _new_packer()
    data: bytes = pack(codec[0](msg))
    if len(data) > max_size:
        raise InvalidArgument(
            f"encoded {type(msg).__name__} is {len(data)} bytes, over the limit of {max_size}"
        )
    return data


_tls = threading.local()


def _new_packer() -> Callable[[Any], bytes]:
    """This thread's reusable Packer (msgpack.packb builds a new one per call)."""
    pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    _tls.pack = pack
    return pack


def decode(data: bytes | bytearray | memoryview, *, max_size: int = MAX_FRAME_SIZE) -> Message:
    """Parse one message from ``data``; raise :class:`DecodeError` on any malformed input."""
    if data.__class__ is not bytes and not isinstance(data, _BYTES_LIKE):
        raise DecodeError(f"decode needs bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise DecodeError(f"frame of {len(data)} bytes is over the limit of {max_size}")
    try:
        obj = _unpackb(data, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types; all mean "malformed"
        raise DecodeError(f"malformed msgpack ({type(exc).__name__}: {exc})") from None
    return from_wire(obj)


_BYTES_LIKE = (bytes, bytearray, memoryview)


def to_wire(msg: Message) -> Any:
    """The msgpack-ready tuple for ``msg`` (what :func:`encode` packs)."""
    codec = type(msg)._aura_codec or _compile(type(msg))
    return codec[0](msg)


def from_wire(obj: Any) -> Message:
    """Build a message from an unpacked msgpack array; raise :class:`DecodeError` if invalid."""
    if obj.__class__ is not tuple or not obj:
        raise DecodeError(f"a message must be a non-empty array, got {_describe(obj)}")
    tag = obj[0]
    if tag.__class__ is not int:
        raise DecodeError(f"message tag must be an int, got {_describe(tag)}")
    cls = _REGISTRY_GET(tag)
    if cls is None:
        raise DecodeError(f"unknown message tag {tag}")
    codec = cls._aura_codec or _compile(cls)
    try:
        result: Message = codec[1](obj)
    except DecodeError:
        raise
    except (AuraError, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"invalid {cls.__name__}: {exc}") from None
    return result


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _bad(where: str, expected: str, value: Any) -> Any:
    raise DecodeError(f"{where}: expected {expected}, got {_describe(value)}")


# --- per-type converters ---------------------------------------------------------


def _is_message_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Message)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _encoder(tp: Any) -> _Conv | None:
    """A function that maps a field value to its wire form, or None for identity."""
    if tp in (int, float, str, bytes, bool, type(None)):
        return None
    if tp is DeviceId:
        return _enc_device_id
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enc_enum
    if _is_message_type(tp):
        return to_wire
    args = _union_args(tp)
    if args is not None:
        convs = [_encoder(a) for a in args]
        if all(c is None for c in convs):
            return None
        return _enc_dynamic
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = _encoder(targs[0])
            if item is None:
                return None
            item_enc = item
            return lambda v: tuple([item_enc(x) for x in v])
        encs = [_encoder(a) for a in targs]
        if all(e is None for e in encs):
            return None
        pairs = [(e or _identity) for e in encs]
        return lambda v: tuple([e(x) for e, x in zip(pairs, v, strict=True)])
    raise TypeError(f"unsupported message field type {tp!r}")


def _identity(v: Any) -> Any:
    return v


def _enc_device_id(v: DeviceId) -> bytes:
    return v.raw


def _enc_enum(v: enum.Enum) -> Any:
    return v.value


def _enc_dynamic(v: Any) -> Any:
    if isinstance(v, Message):
        return to_wire(v)
    if type(v) is DeviceId:
        return v.raw
    if isinstance(v, enum.Enum):
        return v.value
    return v


def _decoder(tp: Any, where: str) -> _Conv:
    """A function that checks a wire value and converts it to the field's type."""
    if tp is int:

        def dec_int(v: Any) -> int:
            return v if type(v) is int else _bad(where, "int", v)

        return dec_int
    if tp is float:

        def dec_float(v: Any) -> float:
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            return _bad(where, "float", v)  # type: ignore[no-any-return]

        return dec_float
    if tp in (str, bytes, bool):
        name = tp.__name__

        def dec_exact(v: Any) -> Any:
            return v if type(v) is tp else _bad(where, name, v)

        return dec_exact
    if tp is type(None):
        return lambda v: None if v is None else _bad(where, "nil", v)
    if tp is DeviceId:

        def dec_device_id(v: Any) -> DeviceId:
            if type(v) is bytes and len(v) == 16:
                return DeviceId(v)
            return _bad(where, "16-byte DeviceId", v)  # type: ignore[no-any-return]

        return dec_device_id
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_cls = tp

        members = {(type(m.value), m.value): m for m in enum_cls if type(m.value) in (int, str)}

        def dec_enum(v: Any) -> Any:
            if v.__class__ is not int and v.__class__ is not str:
                return _bad(where, enum_cls.__name__, v)
            member = members.get((v.__class__, v))
            if member is None:
                return _bad(where, f"a {enum_cls.__name__} value", v)
            return member

        return dec_enum
    if _is_message_type(tp):
        return _message_decoder((tp,), where)
    args = _union_args(tp)
    if args is not None:
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) != len(args)
        if non_none and all(_is_message_type(a) for a in non_none):
            inner = _message_decoder(tuple(non_none), where)
        elif len(non_none) == 1:
            inner = _decoder(non_none[0], where)
        else:
            inner = _first_of([_decoder(a, where) for a in non_none], where, tp)
        if not optional:
            return inner
        return lambda v: None if v is None else inner(v)
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = _decoder(targs[0], where + "[]")

            def dec_tuple(v: Any) -> tuple[Any, ...]:
                if type(v) is not tuple:
                    return _bad(where, "array", v)  # type: ignore[no-any-return]
                return tuple([item(x) for x in v])

            return dec_tuple
        items = [_decoder(a, f"{where}[{i}]") for i, a in enumerate(targs)]
        n = len(items)

        def dec_fixed(v: Any) -> tuple[Any, ...]:
            if type(v) is not tuple or len(v) != n:
                return _bad(where, f"array of {n}", v)  # type: ignore[no-any-return]
            return tuple([d(x) for d, x in zip(items, v, strict=True)])

        return dec_fixed
    raise TypeError(f"unsupported message field type {tp!r}")


def _first_of(decoders: list[_Conv], where: str, tp: Any) -> _Conv:
    def dec_union(v: Any) -> Any:
        for d in decoders:
            try:
                return d(v)
            except DecodeError:
                continue
        return _bad(where, str(tp), v)

    return dec_union


def _message_decoder(allowed: tuple[type[Message], ...], where: str) -> _Conv:
    names = " | ".join(a.__name__ for a in allowed)

    def dec_message(v: Any) -> Message:
        msg = from_wire(v)
        if not isinstance(msg, allowed):
            return _bad(where, names, msg)  # type: ignore[no-any-return]
        return msg

    return dec_message


# --- per-class code generation ----------------------------------------------------

_PLAIN_CHECK = {int: "int", str: "str", bytes: "bytes", bool: "bool"}


def _compile(cls: type[Message]) -> tuple[_Conv, _Conv]:
    """Generate and cache the (encode, decode) pair of ``cls``."""
    klass: Any = cls
    if not dataclasses.is_dataclass(klass):
        raise InvalidArgument(f"{cls!r} is not a registered message class")
    hints = typing.get_type_hints(klass)
    fields = [f for f in dataclasses.fields(klass) if f.init]
    ns: dict[str, Any] = {"_cls": cls, "_bad": _bad, "_tag": cls.TAG}
    enc_parts = ["_tag"]
    dec_lines = [
        "def _dec(t):",
        f"    if len(t) != {len(fields) + 1}:",
        f"        _bad({cls.__name__!r}, 'an array of {len(fields) + 1} (tag + fields)', t)",
    ]
    args = []
    for i, f in enumerate(fields):
        tp = hints[f.name]
        where = f"{cls.__name__}.{f.name}"
        enc = _encoder(tp)
        if enc is None:
            enc_parts.append(f"m.{f.name}")
        else:
            ns[f"_e{i}"] = enc
            enc_parts.append(f"_e{i}(m.{f.name})")
        var = f"v{i}"
        dec_lines.append(f"    {var} = t[{i + 1}]")
        if tp in _PLAIN_CHECK:
            dec_lines.append(f"    if type({var}) is not {tp.__name__}:")
            dec_lines.append(f"        _bad({where!r}, {_PLAIN_CHECK[tp]!r}, {var})")
        else:
            ns[f"_d{i}"] = _decoder(tp, where)
            dec_lines.append(f"    {var} = _d{i}({var})")
        args.append(var)
    dec_lines.append(f"    return _cls({', '.join(args)})")
    enc_src = f"def _enc(m):\n    return ({', '.join(enc_parts)},)\n"
    exec(enc_src, ns)  # generated from the class's own field list only
    exec("\n".join(dec_lines) + "\n", ns)
    codec: tuple[_Conv, _Conv] = (ns["_enc"], ns["_dec"])
    cls._aura_codec = codec
    return codec
