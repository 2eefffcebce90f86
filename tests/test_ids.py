"""DeviceId and Epoch: value semantics and argument validation."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import EPOCH_MAX, DeviceId, check_epoch


def test_device_id_is_sixteen_bytes_shown_as_uuid() -> None:
    d = DeviceId(bytes(range(16)))
    assert str(d) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert DeviceId.parse(str(d)) == d
    assert d.raw == bytes(range(16))


def test_device_id_from_public_key_is_sha256_prefix() -> None:
    pk = bytes(range(32))
    assert DeviceId.from_public_key(pk).raw == hashlib.sha256(pk).digest()[:16]


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_device_id_order_and_hash_follow_bytes(a: bytes, b: bytes) -> None:
    da, db = DeviceId(a), DeviceId(b)
    assert (da < db) == (a < b)
    assert (da == db) == (a == b)
    if a == b:
        assert hash(da) == hash(db)
    assert pickle.loads(pickle.dumps(da)) == da


def test_device_id_is_immutable() -> None:
    d = DeviceId.from_int(7)
    with pytest.raises(AttributeError):
        d._raw = b"x" * 16  # type: ignore[misc]


@pytest.mark.parametrize("raw", [b"", b"x" * 15, b"x" * 17])
def test_device_id_rejects_wrong_length_naming_it(raw: bytes) -> None:
    with pytest.raises(InvalidArgument, match=str(len(raw))):
        DeviceId(raw)


def test_device_id_rejects_wrong_types() -> None:
    with pytest.raises(WrongType, match="str"):
        DeviceId("0123456789abcdef")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not-a-uuid"):
        DeviceId.parse("not-a-uuid")
    with pytest.raises(InvalidArgument, match="33 bytes"):
        DeviceId.from_public_key(b"k" * 33)


def test_epoch_range() -> None:
    assert check_epoch(0) == 0
    assert check_epoch(EPOCH_MAX) == 2**64 - 1
    with pytest.raises(InvalidArgument, match="-1"):
        check_epoch(-1)
    with pytest.raises(InvalidArgument, match=str(2**64)):
        check_epoch(2**64)
    with pytest.raises(WrongType, match="bool"):
        check_epoch(True)
    with pytest.raises(WrongType, match="float"):
        check_epoch(1.0, "floor")
