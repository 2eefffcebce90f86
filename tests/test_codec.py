"""The msgpack codec: exact round-trips of every registered message type, and
untrusted input that only ever raises DecodeError."""

from __future__ import annotations

import contextlib
import enum
import math
import subprocess
import sys
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aura_sync.messages as messages
import aura_sync.protocols  # noqa: F401 - registers the protocol messages too
from aura_sync.errors import AuraError, DecodeError, InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.messages import Ack, ErrorReply, Message, codec, message, registered_messages
from aura_sync.messages.faults import InjectCrash

messages.load_all()
ALL_TYPES = sorted(registered_messages().values(), key=lambda c: c.TAG)


def _values_for(tp: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    if tp is int:
        return st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1), st.integers(-5, 5))
    if tp is float:
        return st.one_of(
            st.floats(0, 1000, allow_nan=False, allow_infinity=False),
            st.sampled_from([0.0, 0.5, 1.0, 30.0]),
        )
    if tp is str:
        return st.text(max_size=12)
    if tp is bytes:
        return st.one_of(
            st.binary(max_size=8),
            st.binary(min_size=16, max_size=16),
            st.binary(min_size=32, max_size=32),
        )
    if tp is bool:
        return st.booleans()
    if tp is type(None):
        return st.none()
    if tp is DeviceId:
        return st.binary(min_size=16, max_size=16).map(DeviceId)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if tp is Message:  # any message: a field of the abstract type (ControlCall.body)
        return st.sampled_from([Ack(), ErrorReply("AuraError", "x")])
    if isinstance(tp, type) and issubclass(tp, Message):
        return _messages_of(tp, depth + 1)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([_values_for(a, depth) for a in typing.get_args(tp)])
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_values_for(args[0], depth + 1), max_size=3 if depth else 5).map(tuple)
        return st.tuples(*[_values_for(a, depth + 1) for a in args])
    raise AssertionError(f"no strategy for field type {tp!r}")


def _try_build(cls: type[Message], values: tuple[Any, ...]) -> Message | None:
    try:
        return cls(*values)
    except (AuraError, ValueError, TypeError):
        return None


def _messages_of(cls: type[Message], depth: int = 0) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    import dataclasses

    fields = [f for f in dataclasses.fields(cls) if f.init]
    parts = [_values_for(hints[f.name], depth) for f in fields]
    return st.tuples(*parts).map(lambda vals: _try_build(cls, vals)).filter(lambda m: m is not None)


def _same(a: Any, b: Any) -> bool:
    """Exact equality, treating NaN as equal to itself and checking types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_registry_has_the_common_messages() -> None:
    assert registered_messages()[0x0001] is Ack
    assert registered_messages()[0x0002] is ErrorReply
    assert len(ALL_TYPES) >= 2


def test_duplicate_tag_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="duplicate message tag"):

        @message(0x0001)
        class Clash(Message):
            pass


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_every_message_type_round_trips_exactly(cls: type[Message]) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_messages_of(cls))
    def round_trip(msg: Message) -> None:
        data = codec.encode(msg)
        back = codec.decode(data)
        assert type(back) is cls
        assert back == msg or _same(codec.to_wire(back), codec.to_wire(msg))
        assert codec.encode(back) == data

    round_trip()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        result = codec.decode(data)
    except DecodeError:
        return
    assert isinstance(result, Message)


@st.composite
def _mutated_frames(draw: st.DrawFn) -> bytes:
    cls = draw(st.sampled_from(ALL_TYPES))
    msg = draw(_messages_of(cls))
    data = bytearray(codec.encode(msg))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
        if action == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif action == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif action == "append":
            data += draw(st.binary(min_size=1, max_size=4))
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_mutated_frames())
def test_mutated_frames_only_raise_decode_error(data: bytes) -> None:
    try:
        result = codec.decode(data)
    except DecodeError:
        return
    assert isinstance(result, Message)
    # Whatever decoded is a valid message: it re-encodes.
    codec.encode(result)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text()
        | st.binary(),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=20,
    )
)
def test_well_formed_msgpack_of_any_shape_only_raises_decode_error(obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    with contextlib.suppress(DecodeError):
        codec.decode(data)


def test_decode_errors_say_what_was_wrong() -> None:
    with pytest.raises(DecodeError, match="unknown message tag 9999"):
        codec.decode(msgpack.packb([9999]))
    with pytest.raises(DecodeError, match="array of 4"):
        codec.decode(msgpack.packb([ErrorReply.TAG, "x"]))
    with pytest.raises(DecodeError, match=r"ErrorReply\.message: expected str"):
        codec.decode(msgpack.packb([ErrorReply.TAG, "x", 5, None]))
    with pytest.raises(DecodeError, match="over the limit"):
        codec.decode(b"\x00" * 100, max_size=10)
    with pytest.raises(DecodeError, match="malformed msgpack"):
        codec.decode(b"\x92\x01")
    with pytest.raises(DecodeError, match="needs bytes"):
        codec.decode("text")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="non-empty array"):
        codec.decode(msgpack.packb({"tag": 1}))


def test_encode_refuses_non_messages_and_oversized_frames() -> None:
    with pytest.raises(InvalidArgument, match="needs a Message"):
        codec.encode({"tag": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="over the limit of 10"):
        codec.encode(ErrorReply("AuraError", "x" * 100), max_size=10)


def test_error_reply_carries_errors_back() -> None:
    from aura_sync import errors

    reply = codec.decode(codec.encode(ErrorReply.from_exception(errors.RateLimited(0.25, "peer"))))
    assert isinstance(reply, ErrorReply)
    exc = reply.to_exception()
    assert isinstance(exc, errors.RateLimited) and exc.retry_after == 0.25
    unknown = ErrorReply.from_exception(RuntimeError("boom")).to_exception()
    assert isinstance(unknown, errors.ActorCrashed) and "boom" in str(unknown)


def test_an_unknown_tag_loads_every_concern_module_before_it_is_refused() -> None:
    # The concern modules load lazily; a frame of one not imported yet still decodes.
    # This process imported every module already, so a fresh interpreter decodes it.
    frame = codec.encode(InjectCrash("lazy"))
    script = (
        "import sys; from aura_sync.messages import codec\n"
        "assert 'aura_sync.messages.faults' not in sys.modules\n"
        f"print(repr(codec.decode({frame!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(InjectCrash("lazy"))
    with pytest.raises(DecodeError, match="unknown message tag 65000"):
        codec.decode(msgpack.packb([65000]))


@pytest.mark.parametrize("depth", [10, 100, 1000, 5000])
def test_deeply_nested_input_is_a_decode_error_not_a_recursion_error(depth: int) -> None:
    data = b"\x91" * depth + b"\xc0"
    with pytest.raises(DecodeError):
        codec.decode(data)
    # Deep nesting inside a field of a known message, too.
    inner = b"\x91" * depth + b"\xc0"
    frame = b"\x94" + msgpack.packb(ErrorReply.TAG) + inner + b"\xa1x\xc0"
    with pytest.raises(DecodeError, match=r"ErrorReply\.error_type: expected str|StackError"):
        codec.decode(frame)


@message(0xFD20)
class _Envelope(Message):
    """A message carrying any other message (the abstract ``Message`` field type)."""

    body: Message
    note: str | None = None


def test_a_field_typed_message_carries_any_registered_message() -> None:
    for body in (Ack(), ErrorReply("AuraError", "x", 0.5), _Envelope(Ack(), "inner")):
        msg = _Envelope(body, "n")
        assert codec.decode(codec.encode(msg)) == msg
    with pytest.raises(DecodeError, match="unknown message tag 64999"):
        codec.decode(msgpack.packb([0xFD20, [64999], None]))


def test_encode_refuses_a_value_its_field_cannot_carry() -> None:
    with pytest.raises(InvalidArgument, match="cannot encode ErrorReply"):
        codec.encode(ErrorReply("AuraError", object()))  # type: ignore[arg-type]


class _Colour(enum.Enum):
    RED = 1
    BLUE = "blue"


@message(0xFD21)
class _Shapes(Message):
    """Every field shape the codec supports, nested."""

    colours: tuple[_Colour, ...]
    either: int | str
    pair: tuple[int, str] | None
    weighted: tuple[tuple[DeviceId, float], ...]
    maybe_colour: _Colour | None
    bodies: tuple[Ack | ErrorReply, ...]


_SHAPES = st.builds(
    _Shapes,
    st.tuples(st.sampled_from(_Colour)).map(tuple) | st.just(()),
    st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    st.none() | st.tuples(st.integers(0, 9), st.text(max_size=3)),
    st.lists(
        st.tuples(st.binary(min_size=16, max_size=16).map(DeviceId), st.floats(allow_nan=False)),
        max_size=3,
    ).map(tuple),
    st.none() | st.sampled_from(_Colour),
    st.lists(st.just(Ack()) | st.builds(ErrorReply, st.text(max_size=4), st.text(max_size=4))).map(
        tuple
    ),
)


@settings(max_examples=150, deadline=None)
@given(_SHAPES)
def test_every_field_shape_round_trips(msg: _Shapes) -> None:
    assert codec.decode(codec.encode(msg)) == msg


def test_every_field_shape_refuses_the_wrong_wire_type_by_name() -> None:
    good = [0xFD21, [1, "blue"], 5, None, [], None, []]
    assert codec.decode(msgpack.packb(good)) == _Shapes(
        (_Colour.RED, _Colour.BLUE), 5, None, (), None, ()
    )
    cases = {
        1: ([3], r"_Shapes\.colours\[\]: expected a _Colour value"),
        2: (1.5, r"_Shapes\.either: expected int \| str"),
        3: ([1, 2], r"_Shapes\.pair\[1\]: expected str"),
        4: ([[b"short", 1.0]], r"_Shapes\.weighted\[\]\[0\]: expected 16-byte DeviceId"),
        5: ("green", r"_Shapes\.maybe_colour: expected a _Colour value"),
        6: (
            [[0xFD21, [], 0, None, [], None, []]],
            r"_Shapes\.bodies\[\]: expected Ack \| ErrorReply",
        ),
    }
    for index, (value, error) in cases.items():
        frame = list(good)
        frame[index] = value
        with pytest.raises(DecodeError, match=error):
            codec.decode(msgpack.packb(frame))


def test_a_message_may_not_define_its_own_init() -> None:
    with pytest.raises(TypeError, match="must not define __init__"):

        @message(0xFD22)
        class _Custom(Message):
            x: int

            def __init__(self, x: int) -> None:
                object.__setattr__(self, "x", x)


@message(0xFD23)
class _PlainUnion(Message):
    """A union of plain types alone (no other field puts the decoder's names in place)."""

    value: bool | int | float | str | bytes | None


@settings(max_examples=60, deadline=None)
@given(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
       | st.text(max_size=5) | st.binary(max_size=5))  # fmt: skip
def test_a_union_of_plain_types_round_trips(value: object) -> None:
    msg = _PlainUnion(value)  # type: ignore[arg-type]
    back = codec.decode(codec.encode(msg))
    assert back == msg and type(back.value) is type(value)
    with pytest.raises(DecodeError, match=r"_PlainUnion\.value: expected"):
        codec.decode(msgpack.packb([0xFD23, [1]]))
