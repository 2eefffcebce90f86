"""Value types shared by every layer: :class:`DeviceId` and :data:`Epoch`.

Layer: values.  Imports only :mod:`aura_sync.errors`.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final, NewType

from aura_sync.errors import InvalidArgument, WrongType

__all__ = ["EPOCH_MAX", "DeviceId", "Epoch", "check_epoch"]

Epoch = NewType("Epoch", int)
"""An epoch number: an ``int`` with ``0 <= e < 2**64``."""

EPOCH_MAX: Final = 2**64 - 1
"""The largest valid epoch."""


def check_epoch(value: object, name: str = "epoch") -> Epoch:
    """Return ``value`` as an :data:`Epoch` or raise a clear error.

    Raises :class:`~aura_sync.errors.WrongType` for a non-int (``bool``
    included) and :class:`~aura_sync.errors.InvalidArgument` outside
    ``0 .. 2**64-1``.
    """
    if type(value) is not int:
        raise WrongType(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value <= EPOCH_MAX:
        raise InvalidArgument(f"{name} must be in 0..2**64-1, got {value}")
    return Epoch(value)


class DeviceId:
    """The identity of a device (a node): 16 immutable bytes.

    Ordered (bytewise), hashable, and shown as a UUID.  A node's id is
    derived from its Ed25519 public key with :meth:`from_public_key`.
    """

    __slots__ = ("_raw",)
    _raw: bytes

    SIZE: Final = 16

    def __init__(self, raw: bytes) -> None:
        if type(raw) is not bytes:
            raise WrongType(f"DeviceId needs 16 bytes, got {type(raw).__name__} {raw!r}")
        if len(raw) != self.SIZE:
            raise InvalidArgument(f"DeviceId needs exactly 16 bytes, got {len(raw)}: {raw!r}")
        object.__setattr__(self, "_raw", raw)

    @classmethod
    def from_public_key(cls, public_key: bytes) -> DeviceId:
        """The id of the holder of an Ed25519 public key (32 raw bytes).

        It is the first 16 bytes of the key's SHA-256 digest.
        """
        if type(public_key) is not bytes:
            raise WrongType(
                f"public_key must be bytes, got {type(public_key).__name__} {public_key!r}"
            )
        if len(public_key) != 32:
            raise InvalidArgument(
                f"public_key must be a 32-byte raw Ed25519 key, got {len(public_key)} bytes"
            )
        return cls(hashlib.sha256(public_key).digest()[:16])

    @classmethod
    def parse(cls, text: str) -> DeviceId:
        """Parse the UUID form produced by ``str(device_id)``."""
        if not isinstance(text, str):
            raise WrongType(f"DeviceId.parse needs a str, got {type(text).__name__} {text!r}")
        try:
            return cls(uuid.UUID(text).bytes)
        except ValueError:
            raise InvalidArgument(f"not a DeviceId (UUID form expected): {text!r}") from None

    @classmethod
    def from_int(cls, n: int) -> DeviceId:
        """A DeviceId whose 16 bytes are ``n`` big-endian (for tests and examples)."""
        if type(n) is not int:
            raise WrongType(f"n must be an int, got {type(n).__name__} {n!r}")
        if not 0 <= n < 2**128:
            raise InvalidArgument(f"n must be in 0..2**128-1, got {n}")
        return cls(n.to_bytes(16, "big"))

    @property
    def raw(self) -> bytes:
        """The 16 bytes of the id."""
        return self._raw

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DeviceId is immutable")

    def __reduce__(self) -> tuple[type[DeviceId], tuple[bytes]]:
        return (DeviceId, (self._raw,))

    def __eq__(self, other: object) -> bool:
        if type(other) is DeviceId:
            return self._raw == other._raw
        return NotImplemented

    def __lt__(self, other: DeviceId) -> bool:
        if type(other) is not DeviceId:
            return NotImplemented
        return self._raw < other._raw

    def __le__(self, other: DeviceId) -> bool:
        if type(other) is not DeviceId:
            return NotImplemented
        return self._raw <= other._raw

    def __gt__(self, other: DeviceId) -> bool:
        if type(other) is not DeviceId:
            return NotImplemented
        return self._raw > other._raw

    def __ge__(self, other: DeviceId) -> bool:
        if type(other) is not DeviceId:
            return NotImplemented
        return self._raw >= other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __str__(self) -> str:
        return str(uuid.UUID(bytes=self._raw))

    def __repr__(self) -> str:
        return f"DeviceId('{self}')"


_new_object = object.__new__
# The setter of the ``_raw`` slot.  Private: for _trusted_device_id, and for the
# codec's generated decoders, which inline the same two steps after their checks.
_set_raw: Any = DeviceId.__dict__["_raw"].__set__


def _trusted_device_id(raw: bytes) -> DeviceId:
    """A :class:`DeviceId` of ``raw`` WITHOUT the checks of ``DeviceId(raw)``.

    Private, for the codec only: it calls this after checking itself that
    ``type(raw) is bytes and len(raw) == 16``.  Anything else must use
    ``DeviceId(raw)``.
    """
    device_id: DeviceId = _new_object(DeviceId)
    _set_raw(device_id, raw)
    return device_id
