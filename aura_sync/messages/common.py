"""Messages shared by every concern (tags 0x0001-0x000F): ``Ack`` and ``ErrorReply``."""

from __future__ import annotations

import contextlib

from aura_sync import errors
from aura_sync.messages._base import Message, message

__all__ = ["Ack", "ErrorReply"]


@message(0x0001)
class Ack(Message):
    """A request succeeded and has nothing else to say."""


@message(0x0002)
class ErrorReply(Message):
    """A request failed: ``error_type`` names an :mod:`aura_sync.errors` class;
    ``retry_after`` (seconds) is set for a rate-limit denial."""

    error_type: str
    message: str
    retry_after: float | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorReply:
        """The reply that carries ``exc`` back to the asker."""
        name = type(exc).__name__
        if not isinstance(getattr(errors, name, None), type):
            name = "ActorCrashed" if not isinstance(exc, errors.AuraError) else "AuraError"
        if isinstance(exc, errors.RateLimited):
            return cls(name, exc.reason, exc.retry_after)
        return cls(name, str(exc) or name, None)

    def to_exception(self) -> errors.AuraError:
        """The :mod:`aura_sync.errors` exception this reply stands for."""
        if self.error_type == "RateLimited":
            return errors.RateLimited(self.retry_after or 0.0, self.message)
        cls = getattr(errors, self.error_type, None)
        if isinstance(cls, type) and issubclass(cls, errors.AuraError):
            with contextlib.suppress(TypeError):  # not for errors with a richer constructor
                return cls(self.message)
        return errors.AuraError(f"{self.error_type}: {self.message}")
