"""The msgpack codec: ``encode(msg) -> bytes`` and ``decode(data) -> Message``.

Wire format: a message is a msgpack array ``[tag, field1, field2, ...]`` in
dataclass field order.  ``DeviceId`` is a 16-byte bin, an enum is its value, a
nested message is its own array, a tuple is an array.

``decode`` treats its input as untrusted: on any input it either returns a
valid message or raises :class:`~aura_sync.errors.DecodeError` saying what was
wrong (bad msgpack, frame over the size limit, unknown tag, wrong arity, wrong
field type, value out of range).  Nothing else escapes from it.

Per-class encoders and decoders are generated once, on first use, from the
dataclass's type hints; the generated code inlines the checks for plain,
float, enum, DeviceId, optional and tuple fields so that the hot path is one
msgpack call plus a few ``type() is`` tests.  A decoded message is built the
way its dataclass ``__init__`` builds it (every field set, then
``__post_init__``), so it goes through exactly the validation of a message
built in code; only the argument binding is skipped.  A DeviceId is built
through the private trusted path of :mod:`aura_sync.ids` after the codec has
checked its type and length itself.

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
from aura_sync.ids import DeviceId, _set_raw, _trusted_device_id
from aura_sync.messages._base import _REGISTRY, Message

_REGISTRY_GET = _REGISTRY.get

__all__ = ["MAX_FRAME_SIZE", "decode", "encode", "from_wire", "to_wire"]

MAX_FRAME_SIZE: Final = 1 << 20
"""Default maximum size of one encoded message, in bytes (1 MiB)."""

_Conv = Callable[[Any], Any]
_Codec = tuple[_Conv, _Conv, bytes | None]
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
    data = codec[2]
    if data is None:
        try:
            pack = _tls.pack
        except AttributeError:
            pack = _new_packer()
        data = pack(codec[0](msg))
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
    # from_wire, inlined for the top level (one call less on every message).
    if obj.__class__ is tuple and obj:
        tag = obj[0]
        if tag.__class__ is int:
            dec = _DECODERS_GET(tag)
            if dec is not None:
                try:
                    result: Message = dec(obj)
                except DecodeError:
                    raise
                except (AuraError, ValueError, TypeError, OverflowError) as exc:
                    raise DecodeError(f"invalid {_REGISTRY[tag].__name__}: {exc}") from None
                return result
    return from_wire(obj)  # not compiled yet, or malformed: the full path


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
        raise DecodeError(f"a message must be a non-empty array, got {_describe(obj)}")
    tag = obj[0]
    if tag.__class__ is not int:
        raise DecodeError(f"message tag must be an int, got {_describe(tag)}")
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
    except (AuraError, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"invalid {_REGISTRY[tag].__name__}: {exc}") from None
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
                return _trusted_device_id(v)
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
        # from_wire inlined for the common case (a compiled tag); else the full path.
        dec = None
        if v.__class__ is tuple and v:
            tag = v[0]
            if tag.__class__ is int:
                dec = _DECODERS_GET(tag)
        if dec is None:
            msg = from_wire(v)
        else:
            try:
                msg = dec(v)
            except DecodeError:
                raise
            except (AuraError, ValueError, TypeError, OverflowError) as exc:
                raise DecodeError(f"invalid {_REGISTRY[v[0]].__name__}: {exc}") from None
        if not isinstance(msg, allowed):
            return _bad(where, names, msg)  # type: ignore[no-any-return]
        return msg

    return dec_message


# --- per-class code generation ----------------------------------------------------

_PLAIN = (int, str, bytes, bool)
_MISSING = object()


def _enc_expr(tp: Any, expr: str, ns: dict[str, Any], key: str) -> str:
    """Python source for the wire form of ``expr`` (a field of type ``tp``).

    Plain fields are used as they are, a DeviceId is its bytes, an enum its
    value; anything else calls the generic encoder of the type.
    """
    enc = _encoder(tp)
    if enc is None:
        return expr
    if tp is DeviceId:
        return f"{expr}._raw"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"{expr}._value_"
    args = _union_args(tp)
    if args is not None and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        if inner is DeviceId or (isinstance(inner, type) and issubclass(inner, enum.Enum)):
            attr = "_raw" if inner is DeviceId else "_value_"
            return f"(None if {expr} is None else {expr}.{attr})"
        if _is_message_type(inner):
            ns["_to_wire"] = to_wire
            return f"(None if {expr} is None else _to_wire({expr}))"
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item = targs[0]
            if item is DeviceId:
                return f"tuple([x._raw for x in {expr}])"
            if _is_message_type(item):  # to_wire inlined
                ns["_compile"] = _compile
                return f"tuple([(x._aura_codec or _compile(type(x)))[0](x) for x in {expr}])"
    ns[key] = enc
    return f"{key}({expr})"


def _dec_lines(tp: Any, var: str, where: str, ns: dict[str, Any], key: str) -> list[str]:
    """Source lines that check wire value ``var`` and turn it into the field's value.

    The checks and error messages are those of :func:`_decoder`; the common
    field types are inlined, the others call the decoder of the type.
    """
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
        # ids._trusted_device_id inlined: the bytes and the length are checked here.
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
        by_int = {m.value: m for m in tp if type(m.value) is int}
        by_str = {m.value: m for m in tp if type(m.value) is str}
        ns[key + "i"] = by_int.get
        ns[key + "s"] = by_str.get
        name = tp.__name__
        return [
            f"if {var}.__class__ is int:",
            f"    m_ = {key}i({var})",
            f"elif {var}.__class__ is str:",
            f"    m_ = {key}s({var})",
            "else:",
            f"    m_ = _bad({w}, {name!r}, {var})",
            "if m_ is None:",
            f"    _bad({w}, {'a ' + name + ' value'!r}, {var})",
            f"{var} = m_",
        ]
    if _is_message_type(tp):
        return _nested_lines(tp, var, where, ns, key)
    args = _union_args(tp)
    if args is not None and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        if _union_args(inner) is None:
            body = _dec_lines(inner, var, where, ns, key)
            return [f"if {var} is not None:"] + ["    " + line for line in body]
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis and _is_message_type(targs[0]):
            item = _nested_lines(targs[0], "x_", where + "[]", ns, key)
            return [
                f"if {var}.__class__ is not tuple:",
                f"    _bad({w}, 'array', {var})",
                "l_ = []",
                f"for x_ in {var}:",
                *["    " + line for line in item],
                "    l_.append(x_)",
                f"{var} = tuple(l_)",
            ]
        if len(targs) == 2 and targs[1] is Ellipsis and targs[0] is DeviceId:
            ns["_DeviceId"] = DeviceId
            ns["_set_raw"] = _set_raw
            return [
                f"if {var}.__class__ is not tuple:",
                f"    _bad({w}, 'array', {var})",
                "l_ = []",
                f"for x_ in {var}:",
                "    if x_.__class__ is not bytes or len(x_) != 16:",
                f"        _bad({where + '[]'!r}, '16-byte DeviceId', x_)",
                "    d_ = _new(_DeviceId)",
                "    _set_raw(d_, x_)",
                "    l_.append(d_)",
                f"{var} = tuple(l_)",
            ]
        if len(targs) == 2 and targs[1] is Ellipsis and _plain_fixed(targs[0]):
            item_args = typing.get_args(targs[0])
            return [
                f"if {var}.__class__ is not tuple:",
                f"    _bad({w}, 'array', {var})",
                f"for x_ in {var}:",
                *["    " + line for line in _fixed_lines(item_args, "x_", where + "[]")],
            ]
        if _plain_fixed(tp):
            return _fixed_lines(targs, var, where)
        if len(targs) == 2 and targs[1] is Ellipsis and targs[0] in _PLAIN:
            name = targs[0].__name__
            return [
                f"if {var}.__class__ is not tuple:",
                f"    _bad({w}, 'array', {var})",
                f"for x_ in {var}:",
                f"    if x_.__class__ is not {name}:",
                f"        _bad({where + '[]'!r}, {name!r}, x_)",
            ]
    ns[key] = _decoder(tp, where)
    return [f"{var} = {key}({var})"]


def _nested_lines(tp: Any, var: str, where: str, ns: dict[str, Any], key: str) -> list[str]:
    """Lines that decode ``var`` into a nested message of class ``tp``.

    A frame with ``tp``'s own tag goes straight to ``tp``'s compiled decoder
    (errors wrapped as :func:`from_wire` wraps them); anything else (another
    tag, a malformed frame) takes the general path with its checks and messages.
    """
    ns[key] = _message_decoder((tp,), where)
    direct = None
    msg_cls: type[Message] = tp
    if _REGISTRY_GET(msg_cls.TAG) is tp and msg_cls not in _COMPILING:
        direct = (msg_cls._aura_codec or _compile(msg_cls))[1]
    if direct is None:
        return [f"{var} = {key}({var})"]
    ns[key + "x"] = direct
    ns["_DecodeError"] = DecodeError
    ns["_INVALID"] = _INVALID
    return [
        f"if {var}.__class__ is tuple and {var} and {var}[0].__class__ is int"
        f" and {var}[0] == {tp.TAG}:",
        "    try:",
        f"        {var} = {key}x({var})",
        "    except _DecodeError:",
        "        raise",
        "    except _INVALID as e_:",
        f"        raise _DecodeError({'invalid ' + tp.__name__ + ': '!r} + str(e_)) from None",
        "else:",
        f"    {var} = {key}({var})",
    ]


_INVALID = (AuraError, ValueError, TypeError, OverflowError)
# Classes being compiled (a nested field of its own class must not recurse).
_COMPILING: set[type[Message]] = set()


def _plain_fixed(tp: Any) -> bool:
    """Whether ``tp`` is a fixed tuple of plain types (``tuple[str, int]``)."""
    if typing.get_origin(tp) is not tuple:
        return False
    targs = typing.get_args(tp)
    return bool(targs) and Ellipsis not in targs and all(a in _PLAIN for a in targs)


def _fixed_lines(targs: tuple[Any, ...], var: str, where: str) -> list[str]:
    """Check lines for a fixed tuple of plain types held in ``var`` (kept as it is)."""
    n = len(targs)
    items = [f"y{j}_" for j in range(n)]
    lines = [
        f"if {var}.__class__ is not tuple or len({var}) != {n}:",
        f"    _bad({where!r}, 'array of {n}', {var})",
        f"{', '.join(items)}, = {var}",
    ]
    for j, a in enumerate(targs):
        lines += [
            f"if {items[j]}.__class__ is not {a.__name__}:",
            f"    _bad({f'{where}[{j}]'!r}, {a.__name__!r}, {items[j]})",
        ]
    return lines


def _fast_init(cls: Any, names: list[str]) -> list[Any] | None:
    """The slot setters of ``cls``'s fields if its ``__init__`` is the plain dataclass one.

    Then the decoder builds the instance as that ``__init__`` does (set every
    field, call ``__post_init__``) without the argument binding; otherwise it
    calls the class.
    """
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if code is None or not code.co_qualname.startswith("__create_fn__"):
        return None
    if list(code.co_varnames[1 : code.co_argcount]) != names or code.co_kwonlyargcount:
        return None
    setters = []
    for name in names:
        slot = getattr(cls, name, None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        setters.append(slot.__set__)
    return setters


def _compile(cls: type[Message]) -> _Codec:
    """Generate and cache the (encode, decode) pair of ``cls``."""
    klass: Any = cls
    if not dataclasses.is_dataclass(klass):
        raise InvalidArgument(f"{cls!r} is not a registered message class")
    _COMPILING.add(cls)
    try:
        return _generate(cls, klass)
    finally:
        _COMPILING.discard(cls)


def _generate(cls: type[Message], klass: Any) -> _Codec:
    hints = typing.get_type_hints(klass)
    all_fields = dataclasses.fields(klass)
    fields = [f for f in all_fields if f.init]
    names = [f.name for f in fields]
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
    setters = _fast_init(klass, names) if len(fields) == len(all_fields) else None
    if setters is None:
        dec_lines.append(f"    return _cls({', '.join(args)})")
    else:
        dec_lines.append("    o = _new(_cls)")
        for i, setter in enumerate(setters):
            ns[f"_s{i}"] = setter
            dec_lines.append(f"    _s{i}(o, v{i})")
        post = getattr(klass, "__post_init__", None)
        if post is not None:
            ns["_post"] = post
            dec_lines.append("    _post(o)")
        dec_lines.append("    return o")
    enc_src = f"def _enc(m):\n    return ({', '.join(enc_parts)},)\n"
    exec(enc_src, ns)  # generated from the class's own field list only
    exec("\n".join(dec_lines) + "\n", ns)
    enc_fn, dec_fn = ns["_enc"], ns["_dec"]
    # A message without fields always encodes to the same frame: keep it.
    frame = None if fields else bytes(msgpack.packb(enc_fn(None), use_bin_type=True))
    codec: _Codec = (enc_fn, dec_fn, frame)
    cls._aura_codec = codec
    if _REGISTRY_GET(cls.TAG) is cls:
        _DECODERS[cls.TAG] = codec[1]
    return codec
