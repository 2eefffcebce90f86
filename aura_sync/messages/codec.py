"""The msgpack codec: ``encode(msg) -> bytes`` and ``decode(data) -> Message``.

A message is the array ``[tag, field1, ...]``; a ``DeviceId`` is a 16-byte bin, an
enum its value, a nested message or a tuple an array.  ``decode`` treats its input
as untrusted: it returns a message whose fields have exactly their declared types
or raises :class:`DecodeError` (malformed, too large, too deep, unknown tag, wrong
arity or field type), nothing else.  Each class gets one encoder and one decoder,
generated as Python source on first use (closures measured 2x slower).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import operator
import reprlib
import threading
import types
import typing
from collections.abc import Callable
from typing import Any, Final

import msgpack

from aura_sync.errors import AuraError, DecodeError, InvalidArgument
from aura_sync.ids import DeviceId, _set_raw
from aura_sync.messages._base import _REGISTRY, Message

_REGISTRY_GET = _REGISTRY.get

__all__ = ["MAX_FRAME_SIZE", "decode", "describe", "encode", "from_wire", "to_wire"]

MAX_FRAME_SIZE: Final = 1 << 20
"""Default maximum size of one encoded message, in bytes (1 MiB)."""

_Conv = Callable[[Any], Any]
_Codec = tuple[_Conv, _Conv, bytes | None]
_unpackb = msgpack.unpackb


def encode(msg: Message, *, max_size: int = MAX_FRAME_SIZE) -> bytes:
    """Serialize ``msg`` to msgpack bytes; InvalidArgument if it is not a registered message
    or its encoding exceeds ``max_size`` bytes."""
    try:
        codec = msg._aura_codec or _compile(type(msg))
    except AttributeError:
        raise InvalidArgument(f"encode needs a Message, got {describe(msg)}") from None
    data: bytes | None = codec[2]
    if data is None:
        try:
            pack = _tls.pack
        except AttributeError:
            pack = _new_packer()
        try:
            data = pack(codec[0](msg))
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise InvalidArgument(f"cannot encode {type(msg).__name__}: {exc}") from None
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
        # msgpack >= 1.1 defaults: raw=False, strict_map_key=True (passing them costs ~40%).
        obj = _unpackb(data, use_list=False)
    except Exception as exc:  # msgpack raises many types; all mean "malformed"
        raise DecodeError(f"malformed msgpack ({type(exc).__name__}: {exc})") from None
    return from_wire(obj)


_BYTES_LIKE = (bytes, bytearray, memoryview)

# tag -> the compiled decoder of that class (filled by _compile).
_DECODERS: dict[int, _Conv] = {}
_DECODERS_GET = _DECODERS.get


def to_wire(msg: Message) -> Any:
    """The msgpack-ready tuple for ``msg`` (what :func:`encode` packs)."""
    codec = type(msg)._aura_codec or _compile(type(msg))
    return codec[0](msg)


def from_wire(obj: Any) -> Message:
    """Build a message from an unpacked msgpack array; raise :class:`DecodeError` if invalid."""
    if obj.__class__ is not tuple or not obj:
        raise DecodeError(f"a message must be a non-empty array, got {describe(obj)}")
    tag = obj[0]
    if tag.__class__ is not int:
        raise DecodeError(f"message tag must be an int, got {describe(tag)}")
    dec = _DECODERS_GET(tag)
    if dec is None:
        cls = _REGISTRY_GET(tag)
        if cls is None:
            from aura_sync.messages import load_all  # the package is initialised by now

            load_all()
            cls = _REGISTRY_GET(tag)
        if cls is None:
            raise DecodeError(f"unknown message tag {tag}")
        dec = (cls._aura_codec or _compile(cls))[1]
    try:
        result: Message = dec(obj)
    except DecodeError:
        raise
    except _INVALID as exc:
        raise DecodeError(f"invalid {_REGISTRY[tag].__name__}: {exc}") from None
    except RecursionError:
        raise DecodeError("message nested too deeply") from None
    return result


def describe(value: Any) -> str:
    """``value``'s type and a bounded repr (``?`` if its repr raises), for error texts."""
    try:
        text = _repr.repr(value)  # bounded in depth and length, so never recursion-deep
    except Exception:  # a value whose repr fails must not hide the decode error
        text = "?"
    return f"{type(value).__name__} {text}"


_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = _repr.maxother = 40


def _bad(where: str, expected: str, value: Any) -> Any:
    raise DecodeError(f"{where}: expected {expected}, got {describe(value)}")


# --- per-type converters ---------------------------------------------------------


def _is_message_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Message)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _enc_dynamic(v: Any) -> Any:
    if isinstance(v, Message):
        return to_wire(v)
    if type(v) is DeviceId:
        return v.raw
    if isinstance(v, enum.Enum):
        return v.value
    return v


# --- per-class code generation ----------------------------------------------------

_PLAIN = (int, str, bytes, bool)


def _enc_expr(tp: Any, expr: str, ns: dict[str, Any], key: str) -> str:
    """Python source for the wire form of ``expr`` (a field of type ``tp``); a union of
    several non-plain types goes through :func:`_enc_dynamic`; ``key`` names variables."""
    if tp in (int, float, str, bytes, bool, type(None)):
        return expr
    if tp is DeviceId:
        return f"{expr}._raw"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"{expr}._value_"
    if _is_message_type(tp):
        ns["_compile"] = _compile
        return f"({expr}._aura_codec or _compile(type({expr})))[0]({expr})"
    args = _union_args(tp)
    if args is not None:
        present = [a for a in args if a is not type(None)]
        parts = [_enc_expr(a, expr, ns, key) for a in present]
        if all(part == expr for part in parts):
            return expr
        if len(present) == 1:
            return f"(None if {expr} is None else {parts[0]})"
        ns["_enc_dynamic"] = _enc_dynamic
        return f"_enc_dynamic({expr})"
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            var = f"{key}x"
            item = _enc_expr(targs[0], var, ns, key + "i")
            return expr if item == var else f"tuple([{item} for {var} in {expr}])"
        ns["_check_arity"] = _check_arity
        var = f"{key}y"
        parts = [_enc_expr(a, f"{var}[{j}]", ns, f"{key}t{j}") for j, a in enumerate(targs)]
        if all(part == f"{var}[{j}]" for j, part in enumerate(parts)):
            return expr
        body = ", ".join(parts)
        return f"(lambda {var}: ({body},))(_check_arity({expr}, {len(targs)}))"
    raise TypeError(f"unsupported message field type {tp!r}")


def _check_arity(value: Any, n: int) -> Any:
    if len(value) != n:
        raise ValueError(f"expected {n} items, got {len(value)}")
    return value


def _dec_lines(tp: Any, var: str, where: str, ns: dict[str, Any], key: str) -> list[str]:
    """Source lines that check the wire value in ``var`` and turn it into a ``tp`` value
    (``key``, unique to the field, prefixes the names put in ``ns`` and locals)."""
    w = repr(where)
    if tp in _PLAIN:
        name = tp.__name__
        return [f"if {var}.__class__ is not {name}:", f"    _bad({w}, {name!r}, {var})"]
    if tp is float:
        return [
            f"if {var}.__class__ is not float:",
            f"    if {var}.__class__ is int:",
            f"        {var} = float({var})",
            "    else:",
            f"        _bad({w}, 'float', {var})",
        ]
    if tp is type(None):
        return [f"if {var} is not None:", f"    _bad({w}, 'nil', {var})"]
    if tp is DeviceId:
        ns["_DeviceId"] = DeviceId
        ns["_set_raw"] = _set_raw
        return [
            f"if {var}.__class__ is not bytes or len({var}) != 16:",
            f"    _bad({w}, '16-byte DeviceId', {var})",
            "d_ = _new(_DeviceId)",
            f"_set_raw(d_, {var})",
            f"{var} = d_",
        ]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {(type(m.value), m.value): m for m in tp if type(m.value) in (int, str)}
        ns[key + "m"] = members.get
        ns["_KEYS"] = _KEYS
        return [
            f"m_ = {key}m(({var}.__class__, {var})) if {var}.__class__ in _KEYS else None",
            "if m_ is None:",
            f"    _bad({w}, {'a ' + tp.__name__ + ' value'!r}, {var})",
            f"{var} = m_",
        ]
    if _is_message_type(tp):
        return _nested_lines((tp,), var, where, ns, key)
    args = _union_args(tp)
    if args is not None:
        present = [a for a in args if a is not type(None)]
        if len(present) < len(args):  # optional
            body = _dec_lines(functools.reduce(operator.or_, present), var, where, ns, key + "o")
            return [f"if {var} is not None:", *["    " + line for line in body]]
        if all(_is_message_type(a) for a in present):
            return _nested_lines(tuple(present), var, where, ns, key)
        # A union of other types: the first alternative that accepts the value.
        ns[key + "u"] = tuple(
            _dec_function(a, where, ns, f"{key}u{i}") for i, a in enumerate(present)
        )
        ns["_DecodeError"] = DecodeError
        return [
            f"for f_ in {key}u:",
            "    try:",
            f"        {var} = f_({var})",
            "        break",
            "    except _DecodeError:",
            "        pass",
            "else:",
            f"    _bad({w}, {str(tp)!r}, {var})",
        ]
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = f"{key}x"
            body = _dec_lines(targs[0], item, where + "[]", ns, key + "i")
            lines = [f"if {var}.__class__ is not tuple:", f"    _bad({w}, 'array', {var})"]
            if targs[0] in _PLAIN:  # checked in place: the tuple is kept as it is
                return [*lines, f"for {item} in {var}:", *["    " + line for line in body]]
            return [
                *lines,
                f"{key}l = []",
                f"for {item} in {var}:",
                *["    " + line for line in body],
                f"    {key}l.append({item})",
                f"{var} = tuple({key}l)",
            ]
        n = len(targs)
        items = [f"{key}y{j}" for j in range(n)]
        lines = [
            f"if {var}.__class__ is not tuple or len({var}) != {n}:",
            f"    _bad({w}, 'array of {n}', {var})",
            f"{', '.join(items)}, = {var}",
        ]
        for j, a in enumerate(targs):
            lines += _dec_lines(a, items[j], f"{where}[{j}]", ns, f"{key}t{j}")
        return [*lines, f"{var} = ({', '.join(items)},)"]
    raise TypeError(f"unsupported message field type {tp!r}")


_KEYS: Final = (int, str)  # the wire types an enum value may have


def _dec_function(tp: Any, where: str, ns: dict[str, Any], name: str) -> _Conv:
    """Generate ``def name(v)`` (in ``ns``) decoding one ``tp`` value."""
    body = _dec_lines(tp, "v", where, ns, name + "_")
    _run([f"def {name}(v):", *["    " + line for line in body], "    return v"], ns)
    return ns[name]  # type: ignore[no-any-return]


def _nested_lines(
    allowed: tuple[type[Message], ...], var: str, where: str, ns: dict[str, Any], key: str
) -> list[str]:
    """Lines that decode ``var`` (through :func:`from_wire`) into a nested message of one
    of the ``allowed`` classes (``Message`` itself allows any)."""
    ns["_from_wire"] = from_wire
    ns[key + "a"] = allowed
    if Message in allowed:
        return [f"{var} = _from_wire({var})"]
    return [
        f"{var} = _from_wire({var})",
        f"if not isinstance({var}, {key}a):",
        f"    _bad({where!r}, {' | '.join(a.__name__ for a in allowed)!r}, {var})",
    ]


_INVALID = (AuraError, ValueError, TypeError, OverflowError)


def _run(lines: list[str], ns: dict[str, Any]) -> None:
    """Compile generated source into ``ns`` (source built from field lists only)."""
    exec("\n".join(lines) + "\n", ns)


def _compile(cls: type[Message]) -> _Codec:
    """Generate and cache the (encode, decode) pair of ``cls``."""
    klass: Any = cls
    if not dataclasses.is_dataclass(klass):
        raise InvalidArgument(f"{cls!r} is not a registered message class")
    hints = typing.get_type_hints(klass)
    fields = dataclasses.fields(klass)
    ns: dict[str, Any] = {"_cls": cls, "_bad": _bad, "_tag": cls.TAG, "_new": object.__new__}
    enc_parts = ["_tag"]
    n = len(fields) + 1
    dec_lines = [
        "def _dec(t):",
        f"    if len(t) != {n}:",
        f"        _bad({cls.__name__!r}, 'an array of {n} (tag + fields)', t)",
    ]
    args = [f"v{i}" for i in range(len(fields))]
    if args:
        dec_lines.append(f"    _, {', '.join(args)}, = t")
    for i, f in enumerate(fields):
        tp = hints[f.name]
        where = f"{cls.__name__}.{f.name}"
        enc_parts.append(_enc_expr(tp, f"m.{f.name}", ns, f"_e{i}"))
        dec_lines += ["    " + line for line in _dec_lines(tp, f"v{i}", where, ns, f"_d{i}")]
    dec_lines.append("    o = _new(_cls)")
    for i, f in enumerate(fields):  # @message classes are slotted: set each slot
        ns[f"_s{i}"] = getattr(klass, f.name).__set__
        dec_lines.append(f"    _s{i}(o, v{i})")
    post = getattr(klass, "__post_init__", None)
    if post is not None:
        ns["_post"] = post
        dec_lines.append("    _post(o)")
    dec_lines.append("    return o")
    enc_src = f"def _enc(m):\n    return ({', '.join(enc_parts)},)\n"
    _run([enc_src], ns)
    _run(dec_lines, ns)
    enc_fn, dec_fn = ns["_enc"], ns["_dec"]
    # A message without fields always encodes to the same frame: keep it.
    frame = None if fields else bytes(msgpack.packb(enc_fn(None), use_bin_type=True))
    codec: _Codec = (enc_fn, dec_fn, frame)
    cls._aura_codec = codec
    if _REGISTRY_GET(cls.TAG) is cls:
        _DECODERS[cls.TAG] = codec[1]
    return codec
