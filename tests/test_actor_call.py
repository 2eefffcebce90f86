"""``address.call``: one generic typed call per operation, blocking and asyncio."""

from __future__ import annotations

import asyncio

import pytest

from aura_sync.actors import AuraActor, handles, spawn
from aura_sync.errors import InvalidArgument, UnknownPeer
from aura_sync.messages import Request, message


@message(0xFE10)
class Halve(Request[float]):
    value: int


@message(0xFE11)
class Forget(Request[None]):
    name: str


class Halver(AuraActor):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[str] = []

    @handles(Halve)
    def _halve(self, msg: Halve) -> float:
        if msg.value < 0:
            raise InvalidArgument(f"value must be >= 0, got {msg.value}")
        return msg.value / 2

    @handles(Forget)
    def _forget(self, msg: Forget) -> None:
        if msg.name == "stranger":
            raise UnknownPeer(f"unknown peer {msg.name!r}")
        self.forgotten.append(msg.name)


def test_call_returns_the_handlers_value() -> None:
    address = spawn(Halver())
    try:
        assert address.call(Halve(3), 5.0) == 1.5
    finally:
        address.stop()


def test_call_raises_the_error_the_handler_raised() -> None:
    address = spawn(Halver())
    try:
        with pytest.raises(InvalidArgument, match="value must be >= 0, got -1"):
            address.call(Halve(-1), 5.0)
        with pytest.raises(UnknownPeer, match="stranger"):
            address.call(Forget("stranger"), 5.0)
        assert address.call(Halve(4), 5.0) == 2.0  # the actor carried on
    finally:
        address.stop()


def test_a_none_reply_is_none_for_call_and_ack_for_ask() -> None:
    address = spawn(Halver())
    try:
        assert address.call(Forget("a"), 5.0) is None
        assert type(address.ask(Forget("b"), 5.0)).__name__ == "Ack"
    finally:
        address.stop()


def test_call_async_awaits_the_same_reply_without_blocking_the_loop() -> None:
    address = spawn(Halver())

    async def main() -> tuple[float, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        value = await address.call_async(Halve(9), 5.0)
        with pytest.raises(InvalidArgument):
            await address.call_async(Halve(-2), 5.0)
        task.cancel()
        return value, float(ticks)

    try:
        value, ticks = asyncio.run(main())
        assert value == 4.5
        assert ticks >= 1
    finally:
        address.stop()
