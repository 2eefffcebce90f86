"""The one module that touches pykka's private names (pykka stays the actor runtime).

:class:`PykkaActor` is aura's only ``pykka.ThreadingActor`` subclass; each private
name is listed with its reason, and ``tests/test_actor_base.py`` fails if a pykka
release changes the behaviour relied on.

``_create_actor_inbox``
    pykka's hook for the inbox (``Actor.__init__`` stores it, ``ActorRef`` copies
    it): ours is the :class:`~aura_sync.actors._mailbox.Mailbox` the loop reads.

``_start_actor_loop``
    Called by ``Actor.start``: routed to the runtime's start, so every actor
    thread is a named daemon thread the supervisor can join.

``_actor_loop``
    pykka's thread body, replaced because the mailbox outlives an incarnation: a
    crashed or stopped one leaves queued messages to its successor, reports a
    failed ``on_start`` to its supervisor, and dispatches by a type table.

``_actor_ref``
    The ref copies ``actor_inbox`` before the actor is bound; :func:`rebind_inbox`
    re-points it at the address's mailbox.

``pykka.messages._ActorStop``
    What ``ActorRef.stop()`` queues: the loop honours it and a closed mailbox
    answers it with ``None``, as pykka's teardown does.

``pykka._actor.ActorInbox``, ``pykka._envelope.Envelope`` (typing only)
    The inbox protocol, and what pykka's refs ``put`` in it (read by ``Mailbox.put``).
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
