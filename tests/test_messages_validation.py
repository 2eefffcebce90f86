"""Validation of the sync messages, the sync helpers, and seconds
given as ints too large for a float: every bad field is an aura_sync error that
names the field and the value, and a message that cannot be encoded is refused
when it is built, not when it is sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aura_sync.effects import ManualClock
from aura_sync.errors import AuraError, InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peers import PeerManager, PeerStatus
from aura_sync.infrastructure.retry import RetryBudget
from aura_sync.messages import codec, sync
from aura_sync.messages import supervision as sup

P1 = DeviceId.from_int(1)
ID = bytes(31) + b"\x07"

BAD: list[tuple[str, Callable[[], object], type[AuraError], tuple[str, ...]]] = [
    # public helpers of the sync messages used to leak bare TypeErrors or accept junk
    ("contains str", lambda: sync.FULL_RANGE.contains("x"), WrongType, ("item", "'x'")),  # type: ignore[arg-type]
    (
        "contains short",
        lambda: sync.FULL_RANGE.contains(b"\x01"),
        InvalidArgument,
        ("item", "32 bytes", "1"),
    ),
    ("fingerprint int", lambda: sync.fingerprint(5), WrongType, ("sorted_ids", "5")),  # type: ignore[arg-type]
    ("fingerprint str", lambda: sync.fingerprint(["a"]), WrongType, ("sorted_ids[0]", "'a'")),  # type: ignore[list-item]
    (
        "fingerprint short",
        lambda: sync.fingerprint([ID, b"\x01"]),
        InvalidArgument,
        ("sorted_ids[1]", "32 bytes", "1"),
    ),
    (
        "exchange twice",
        lambda: sync.PeerExchange(
            (sync.PeerAddress(P1, "a:1"), sync.PeerAddress(P1, "b:1"))
        ).check(),
        InvalidArgument,
        ("peers[1]", str(P1)),
    ),
    (
        "ops request twice",
        lambda: sync.OpsRequest((ID, ID)).check(),
        InvalidArgument,
        ("ids[1]", ID.hex()),
    ),
    (
        "ids not ascending",
        lambda: sync.IdsReply((ID, bytes(32))).check(),
        InvalidArgument,
        ("ascending", "ids[1]", bytes(32).hex(), ID.hex()),
    ),
    (
        "next_lo not above",
        lambda: sync.IdsReply((ID,), bytes(32)).check(),
        InvalidArgument,
        ("next_lo", ID.hex(), bytes(32).hex()),
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "needles"), [pytest.param(c, e, n, id=i) for i, c, e, n in BAD]
)
def test_bad_fields_raise_errors_naming_field_and_value(
    call: Callable[[], object], exc: type[AuraError], needles: tuple[str, ...]
) -> None:
    with pytest.raises(exc) as info:
        call()
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {str(info.value)!r}"


def test_limits_themselves_are_accepted_and_round_trip() -> None:
    top = 2**64 - 1
    for msg in (
        sup.ChildStarted("a", top),
        sup.BackoffElapsed("a", top),
        sup.ChildCounts(top, top, 0, top),
        sup.SupervisionEvent(sup.EventKind.GAVE_UP, "s", "", top, "", 0.0),
    ):
        assert codec.decode(codec.encode(msg)) == msg


def test_helpers_still_answer_for_valid_input() -> None:
    assert sync.FULL_RANGE.contains(ID)
    assert not sync.IdRange(b"\x01" * 32).contains(ID)
    count, digest = sync.fingerprint(iter([ID]))
    assert count == 1 and len(digest) == 32
    assert sync.fingerprint([]) == sync.fingerprint(())


HUGE = 10**400  # an int no float can hold: float(HUGE) raises OverflowError


def _end_session(latency: object) -> None:
    """The core's entry point for a session's latency (a request's value lands here)."""
    manager = PeerManager(clock=ManualClock())
    manager.add_peer(P1)
    manager.set_peer_status(P1, PeerStatus.CONNECTED)
    manager.start_sync_session(P1)
    manager.end_sync_session(P1, True, latency)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "call", "name"),
    [
        ("budget max_tokens", lambda: RetryBudget(HUGE), "max_tokens"),
        ("end session latency", lambda: _end_session(HUGE), "latency"),
    ],
)
def test_an_int_too_large_for_a_float_is_an_invalid_argument(
    label: str, call: Callable[[], object], name: str
) -> None:
    # used to escape as a bare OverflowError from float()
    with pytest.raises(InvalidArgument, match=rf"{name} must be (a )?finite.*got {HUGE}"):
        call()
