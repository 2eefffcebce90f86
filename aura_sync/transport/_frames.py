"""Length-prefixed framing: a 4-byte big-endian length, then that many bytes of codec message.

Used by :mod:`aura_sync.transport.tcp` on top of TLS.  The decoder is a plain
incremental parser: feed it bytes as they arrive, get whole frame payloads
back; it refuses a declared length of zero or above the maximum *before*
buffering the body, so a peer cannot make it allocate more than one frame.

Layer: runtime (internal).
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEADER_SIZE", "FrameDecoder", "FrameError", "encode_frame"]

HEADER_SIZE: Final = 4


class FrameError(Exception):
    """The byte stream is not a valid frame sequence; ``kind`` is "oversized" or "malformed"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode_frame(payload: bytes) -> bytes:
    """``payload`` prefixed with its length (4 bytes, big-endian)."""
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


class FrameDecoder:
    """Incremental frame parser with a maximum frame size (bytes of payload)."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_frame_size: int) -> None:
        self._buf = bytearray()
        self._max = max_frame_size

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return the payloads of every frame now complete.

        Raises :class:`FrameError` on a zero or oversized declared length
        (the stream cannot be resynchronised after that: close it).
        """
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= HEADER_SIZE:
            length = int.from_bytes(buf[pos : pos + HEADER_SIZE], "big")
            if length == 0:
                raise FrameError("malformed", "frame with a declared length of 0")
            if length > self._max:
                raise FrameError(
                    "oversized",
                    f"frame of {length} bytes is over the limit of {self._max} bytes",
                )
            end = pos + HEADER_SIZE + length
            if end > n:
                break
            out.append(bytes(buf[pos + HEADER_SIZE : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def has_partial(self) -> bool:
        """Whether some bytes of an incomplete frame are buffered."""
        return bool(self._buf)
