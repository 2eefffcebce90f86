"""Row group 2, codec: ``codec.encode``/``decode`` per message type vs raw msgpack.

For every registered message type (a representative subset in quick mode) a
sample message is built from its type hints, and three codecs are timed on
it, in ns per operation:

- aura: :func:`aura_sync.messages.codec.encode` / ``decode`` (validating,
  builds the typed message back);
- baseline: ``msgpack.packb`` / ``unpackb`` of an equivalent dict
  (field name -> wire value; no validation, returns a dict);
- reference: msgspec with an equivalent tagged, array-like ``Struct``
  (typed and validating, like aura; the fastest Python option).

Target (issue 4): aura encode+decode <= 2x the raw msgpack dict round trip.
When it is missed, the worst type's round trip is profiled with cProfile and
the top functions go to the results (``profiles["codec"]``).
"""

from __future__ import annotations

import cProfile
import dataclasses
import enum
import io
import pstats
import types
import typing
from collections.abc import Callable
from typing import Any

import msgpack

from aura_sync.messages import codec as _codec
from bench._harness import Context, Target

ROUND_TRIP_TARGET = Target("<=", 2.0)

_SAMPLE_STR = "sync:request_digest"
_SAMPLE_BYTES = bytes(range(32))


def _registered() -> dict[int, type[Any]]:
    """Every message class registered so far (importing the message modules that exist)."""
    import importlib
    import pkgutil

    import aura_sync.messages as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"aura_sync.messages.{info.name}")
            except Exception:  # a module mid-edit must not stop the codec rows
                continue
    from aura_sync.messages import registered_messages

    return registered_messages()


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _is_message(tp: Any) -> bool:
    from aura_sync.messages import Message

    return isinstance(tp, type) and issubclass(tp, Message)


def _sample_value(tp: Any, alt: bool, depth: int, seq: int, idx: int = 0) -> Any:
    """A plausible value of type ``tp``.

    ``alt`` picks a second choice of scalars, ``seq`` is the length of
    variable-length tuples, ``idx`` makes items of one tuple distinct and
    ascending (ids, ints, strings), as messages often require.
    """
    from aura_sync.ids import DeviceId
    from aura_sync.messages import Ack, Message

    if tp is int:
        return idx if alt else idx + 1
    if tp is float:
        return 1.0 + idx if alt else 0.25 + idx
    if tp is str:
        return f"peer-{idx}" if alt else f"{_SAMPLE_STR}/{idx}"
    if tp is bytes:
        return bytes([idx % 256]) * 16 if alt else _SAMPLE_BYTES[:-1] + bytes([idx % 256])
    if tp is bool:
        return not alt
    if tp is type(None):
        return None
    if tp is DeviceId:
        return DeviceId.from_int(0x0123_4567_89AB_CDEF_0F1E_2D3C_4B5A_6978 + idx)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = list(tp)
        return members[-1] if alt and len(members) > 1 else members[0]
    if tp is Message:
        return Ack()
    if _is_message(tp):
        return _build(tp, depth + 1, idx)
    args = _union_args(tp)
    if args is not None:
        non_none = [a for a in args if a is not type(None)]
        return _sample_value(non_none[0], alt, depth, seq, idx) if non_none else None
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            n = seq if depth <= 2 else 0
            return tuple(_sample_value(targs[0], alt, depth, seq, idx + i) for i in range(n))
        return tuple(_sample_value(a, alt, depth, seq, idx) for a in targs)
    raise TypeError(f"no sample for field type {tp!r}")


def _build(cls: type[Any], depth: int = 0, idx: int = 0) -> Any:
    """A valid instance of message class ``cls``, or raise if none of the tries validate.

    Tries plausible values with 3-item tuples, then 1-item and empty tuples,
    then the class defaults where it has some.
    """
    if depth > 3:
        raise TypeError(f"{cls.__name__} nests too deep for a sample")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a message dataclass")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = [
        f
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    last: Exception | None = None
    for seq in (3, 1, 0):
        for alt in (False, True):
            for chosen in (fields, required):
                try:
                    kwargs = {
                        f.name: _sample_value(hints[f.name], alt, depth, seq, idx) for f in chosen
                    }
                    return cls(**kwargs)
                except Exception as exc:
                    last = exc
    raise TypeError(f"could not build a valid sample {cls.__name__}: {last}")


def _as_dict(value: Any) -> Any:
    """The equivalent plain value a user would hand to msgpack (messages become dicts)."""
    from aura_sync.ids import DeviceId

    if _is_message(type(value)):
        return {
            f.name: _as_dict(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
    if type(value) is DeviceId:
        return value.raw
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_as_dict(v) for v in value]
    return value


# --- msgspec reference ---------------------------------------------------------------

_STRUCTS: dict[type[Any], Any] = {}


def _msgspec_type(tp: Any) -> Any:
    from aura_sync.ids import DeviceId

    if tp in (int, float, str, bytes, bool, type(None)):
        return tp
    if tp is DeviceId:
        return bytes
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if _is_message(tp):
        if not dataclasses.is_dataclass(tp):
            raise TypeError(f"a field of the abstract type {tp.__name__} (any message)")
        return _struct_for(typing.cast(type[Any], tp))
    args = _union_args(tp)
    if args is not None:
        mapped = tuple(_msgspec_type(a) for a in args)
        return typing.Union[mapped]  # noqa: UP007 - built dynamically
    if typing.get_origin(tp) is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            return tuple[_msgspec_type(targs[0]), ...]  # type: ignore[misc]
        return tuple[tuple(_msgspec_type(a) for a in targs)]  # type: ignore[misc]
    raise TypeError(f"no msgspec equivalent for {tp!r}")


def _struct_for(cls: type[Any]) -> Any:
    """An equivalent msgspec Struct: frozen, array-like, tagged with the same wire tag."""
    import msgspec

    if cls in _STRUCTS:
        return _STRUCTS[cls]
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _msgspec_type(hints[f.name])) for f in dataclasses.fields(cls) if f.init]
    struct = msgspec.defstruct(
        f"Ref{cls.__name__}", fields, array_like=True, frozen=True, tag=cls.TAG
    )
    _STRUCTS[cls] = struct
    return struct


def _as_struct(value: Any) -> Any:
    from aura_sync.ids import DeviceId

    if _is_message(type(value)):
        struct = _struct_for(type(value))
        return struct(
            **{
                f.name: _as_struct(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.init
            }
        )
    if type(value) is DeviceId:
        return value.raw
    if isinstance(value, tuple):
        return tuple(_as_struct(v) for v in value)
    return value


# --- selection -----------------------------------------------------------------------


def _pick(samples: dict[int, Any], limit: int | None) -> list[int]:
    """Tags to benchmark: all, or per concern (tag range) the richest message, up to ``limit``."""
    tags = sorted(samples)
    if limit is None or len(tags) <= limit:
        return tags
    ranges = [(0x01, 0x0F), (0x10, 0x1F), (0x20, 0x3F), (0x40, 0x5F), (0x60, 0x7F), (0x80, 0x9F)]
    ranges += [(0xA0, 0xBF), (0xC0, 0xFFFF)]
    chosen: list[int] = []
    for lo, hi in ranges:
        in_range = [t for t in tags if lo <= t <= hi]
        if in_range:
            richest = max(in_range, key=lambda t: (len(_enc_size(samples[t])), -t))
            chosen.append(richest)
    if 0x01 in samples and 0x01 not in chosen:
        chosen.insert(0, 0x01)  # the empty Ack: the fixed cost
    for t in tags:  # fill up with the rest in tag order
        if len(chosen) >= limit:
            break
        if t not in chosen:
            chosen.append(t)
    return sorted(chosen[:limit])


def _enc_size(msg: Any) -> bytes:
    from aura_sync.messages import codec

    return codec.encode(msg)


# --- the rows -------------------------------------------------------------------------


def _loop(fn: Callable[[Any], Any], arg: Any) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            fn(arg)

    return loop


def run(ctx: Context) -> None:
    """Time encode, decode and the round trip for each message type; record the rows."""
    from aura_sync.messages import codec

    try:
        import msgspec
    except ImportError:  # pragma: no cover - msgspec is in the bench extra
        msgspec = None  # type: ignore[assignment]

    registry = _registered()
    samples: dict[int, Any] = {}
    unsampled: list[str] = []
    for tag, cls in sorted(registry.items()):
        try:
            samples[tag] = _build(cls)
        except Exception as exc:
            unsampled.append(f"{cls.__name__} ({exc})")
    if unsampled:
        ctx.unavailable(
            f"{len(unsampled)} of {len(registry)} message types",
            "no sample message could be built from the type hints: " + "; ".join(unsampled),
        )
    packb, unpackb = msgpack.packb, msgpack.unpackb
    encode, decode = codec.encode, codec.decode
    worst: tuple[float, Any] | None = None
    for tag in _pick(samples, ctx.size.max_codec_types):
        msg = samples[tag]
        name = type(msg).__name__
        wire = encode(msg)
        assert decode(wire) == msg, f"{name} does not round-trip"
        plain = _as_dict(msg)
        packed = packb(plain)
        note = f"{len(wire)} B vs {len(packed)} B"

        def rt_aura(m: Any = msg) -> Any:
            return decode(encode(m))

        def rt_raw(d: Any = plain) -> Any:
            return unpackb(packb(d))

        ref_loop, ref_why = _msgspec_loop(msgspec, msg)
        loops = {
            "aura encode": _loop(encode, msg),
            "msgpack.packb(dict)": _loop(packb, plain),
            "aura decode": _loop(decode, wire),
            "msgpack.unpackb": _loop(unpackb, packed),
            "aura encode+decode": _loop(rt_aura, msg),
            "msgpack dict round trip": _loop(rt_raw, plain),
        }
        if ref_loop is not None:
            loops["msgspec Struct round trip"] = ref_loop
        with ctx.rep_time(ctx.size.codec_target_s):
            m = ctx.interleaved(loops, unit="ns/op")
        rt_a, rt_b = m["aura encode+decode"], m["msgpack dict round trip"]
        ctx.compare(f"{name} encode", m["aura encode"], m["msgpack.packb(dict)"], note=note)
        ctx.compare(f"{name} decode", m["aura decode"], m["msgpack.unpackb"])
        row = ctx.compare(f"{name} encode+decode", rt_a, rt_b, target=ROUND_TRIP_TARGET)
        if row.ratio is not None and (worst is None or row.ratio > worst[0]):
            worst = (row.ratio, msg)
        if ref_loop is None:
            ctx.unavailable(f"{name} msgspec reference", ref_why)
            continue
        rt_r = m["msgspec Struct round trip"]
        ctx.compare(f"{name} encode+decode vs msgspec", rt_a, rt_r)
        ctx.compare(f"{name} msgspec reference vs msgpack dict", rt_r, rt_b)
    if worst is not None and not ROUND_TRIP_TARGET.met(worst[0]):
        # where the time goes: the worst type, and the empty Ack (the codec's fixed cost)
        parts = [worst[1]]
        if 0x01 in samples and type(worst[1]).TAG != 0x01:
            parts.append(samples[0x01])
        ctx.profiles["codec"] = "\n".join(
            profile_round_trip(m, 5 * ctx.calibrate(_loop(_rt, m))) for m in parts
        )


def _msgspec_loop(msgspec: Any, msg: Any) -> tuple[Callable[[int], None] | None, str]:
    """The msgspec round-trip loop for an equivalent Struct, or ``(None, why)``."""
    if msgspec is None:
        return None, "msgspec is not installed (pip install aura-sync[bench])"
    try:
        struct = _as_struct(msg)
        enc_encode = msgspec.msgpack.Encoder().encode
        dec_decode = msgspec.msgpack.Decoder(type(struct)).decode
        if dec_decode(enc_encode(struct)) != struct:
            raise ValueError("msgspec struct does not round-trip")
    except Exception as exc:
        return None, f"no msgspec equivalent: {exc}"

    def rt_ref(s: Any) -> Any:
        return dec_decode(enc_encode(s))

    return _loop(rt_ref, struct), ""


def _rt(msg: Any) -> Any:
    return _codec.decode(_codec.encode(msg))


def profile_round_trip(msg: Any, n: int, top: int = 15) -> str:
    """cProfile of ``n`` encode+decode round trips of ``msg``: the top functions by own time."""
    loop = _loop(_rt, msg)
    n = max(n, 200)
    prof = cProfile.Profile()
    prof.enable()
    loop(n)
    prof.disable()
    buf = io.StringIO()
    buf.write(f"cProfile: {n} round trips of {type(msg).__name__}\n")
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()
