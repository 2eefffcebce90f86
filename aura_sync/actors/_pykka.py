"""The one module that touches pykka's private names (pykka stays the actor runtime).

:class:`PykkaActor` is aura's only subclass of ``pykka.ThreadingActor``; every
private hook it overrides, and every private pykka name aura uses, is here,
each with the reason it is needed.  ``tests/test_actor_base.py`` checks the
pykka behaviour relied on, so a pykka release that changes it fails a test.

``_create_actor_inbox``
    pykka's hook for "implementors of new actor types": ``Actor.__init__``
    stores its result as ``actor_inbox`` and ``ActorRef`` copies it.  Ours is
    a :class:`~aura_sync.actors._mailbox.Mailbox` (a ``SimpleQueue`` of
    ``(message, reply_slot)`` tuples), so pykka's own refs put into the same
    queue the fast receive loop reads.

``_start_actor_loop``
    pykka's hook that starts the loop, called by ``Actor.start``.  Routed to
    the runtime's own start, so every actor thread is a named daemon thread
    the supervisor can join, however the actor was started.

``_actor_loop``
    pykka's thread body (on_start, the receive loop, a teardown that drains
    the inbox).  Replaced because the mailbox belongs to the stable address
    and outlives an incarnation: a crashed or stopped incarnation must leave
    the queued messages to its successor, report a failed ``on_start`` to
    its supervisor instead of only logging it, and dispatch by a type table
    rather than through ``on_receive``.

``_actor_ref``
    ``ActorRef`` copies ``actor_inbox`` when it is built, in ``Actor.__init__``,
    before the actor is bound to its address.  :func:`rebind_inbox` re-points
    the ref at the address's mailbox so ``actor_ref.tell`` / ``ask`` / ``stop``
    reach the same queue as the address.

``pykka.messages._ActorStop``
    What ``ActorRef.stop()`` and ``Actor.stop()`` put in the inbox.  The
    receive loop honours it (a normal stop) and a closed mailbox answers it
    with ``None``, as pykka's teardown does.

``pykka._actor.ActorInbox`` and ``pykka._envelope.Envelope`` (typing only)
    The inbox protocol ``_create_actor_inbox`` must return, and the object
    pykka's refs ``put`` in it (``message``, ``reply_to``): read by
    ``Mailbox.put``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

import pykka
from pykka.messages import _ActorStop as ActorStop

if TYPE_CHECKING:
    from pykka._actor import ActorInbox
    from pykka._envelope import Envelope

__all__ = ["ActorInbox", "ActorStop", "Envelope", "PykkaActor", "rebind_inbox"]


class PykkaActor(pykka.ThreadingActor):
    """pykka's ``ThreadingActor`` with aura's inbox, thread start and loop (see above)."""

    use_daemon_thread: ClassVar[bool] = True

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        from aura_sync.actors._mailbox import Mailbox  # _mailbox imports this module

        return cast("ActorInbox", Mailbox())

    def _start_actor_loop(self) -> None:
        self._aura_start()

    def _actor_loop(self) -> None:
        self._aura_run()

    def _aura_start(self) -> None:  # pragma: no cover - defined by AuraActor
        raise NotImplementedError

    def _aura_run(self) -> None:  # pragma: no cover - defined by AuraActor
        raise NotImplementedError


def rebind_inbox(actor: pykka.Actor, inbox: Any) -> None:
    """Make ``inbox`` the inbox of ``actor`` and of its pykka ``ActorRef``."""
    actor.actor_inbox = cast("ActorInbox", inbox)
    actor._actor_ref.actor_inbox = actor.actor_inbox
