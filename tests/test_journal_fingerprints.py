"""Stateful property: incremental range fingerprints equal a recomputation from scratch."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aura_sync.identity import NodeIdentity
from aura_sync.messages.sync import IdRange, fingerprint
from aura_sync.protocols import journal as journal_module
from aura_sync.protocols.journal import JOURNAL_FILE_NAME, Journal

_ME, _PEER = NodeIdentity.generate(), NodeIdentity.generate()
_bound = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=1, max_size=2).map(lambda b: b.ljust(32, b"\x00")),  # bucket-aligned
)


class Fingerprints(RuleBasedStateMachine):
    """Random appends, peer batches, reopenings (snapshot + tail replay) and ranges."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="aura-fp-")
        self.path = Path(self.dir) / JOURNAL_FILE_NAME
        self.journal = Journal.open(self.path, identity=_ME, synchronous="NORMAL")
        self.source = Journal.open(":memory:", identity=_PEER)
        self.ids: set[bytes] = set()
        self.sent = 0

    @rule(n=st.integers(1, 40), size=st.integers(0, 16))
    def append(self, n: int, size: int) -> None:
        self.ids.update(self.journal.append_many(bytes([i]) * size for i in range(n)))

    @rule(n=st.integers(1, 30))
    def receive(self, n: int) -> None:
        new = self.source.append_many(b"%d" % (self.sent + i) for i in range(n))
        self.sent += n
        order = self.source.push_order(new)
        assert self.journal.add_many(self.source.get_many(order)) == n
        self.ids.update(new)

    @precondition(lambda self: bool(self.ids))
    @rule()
    def reopen(self) -> None:
        self.journal.close()
        self.journal = Journal.open(self.path, identity=_ME, synchronous="NORMAL")

    @rule(a=_bound, b=st.one_of(st.none(), _bound))
    def range_matches(self, a: bytes, b: bytes | None) -> None:
        if b is not None and b == a:
            return
        lo, hi = (a, b) if b is None or a < b else (b, a)
        r = IdRange(lo, hi)
        digest = self.journal.digest(r)
        assert (digest.count, digest.fingerprint) == fingerprint(
            x for x in self.ids if r.contains(x)
        )

    @invariant()
    def full_range_matches(self) -> None:
        digest = self.journal.digest()
        assert (digest.count, digest.fingerprint) == fingerprint(self.ids)
        assert len(self.journal) == len(self.ids)

    def teardown(self) -> None:
        self.journal.close()
        self.source.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _small_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "SNAPSHOT_EVERY", 50)  # exercise snapshot + tail replay


Fingerprints.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_fingerprints = Fingerprints.TestCase
