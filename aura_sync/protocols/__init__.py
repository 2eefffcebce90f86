"""Protocols: what nodes do with each other over a transport.

* :mod:`aura_sync.protocols.journal`: the SQLite journal of content-addressed
  ops that anti-entropy sync replicates.

Layer: runtime.
"""
