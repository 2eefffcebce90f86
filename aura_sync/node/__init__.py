"""The long-lived node: configuration, health and metrics, the supervised node, the demo.

* :mod:`aura_sync.node.config`: :class:`NodeConfig` (embedded defaults <
  optional TOML file < command-line flags; errors name the key and value).
* :mod:`aura_sync.node.metrics`: ``/health`` (JSON) and ``/metrics``
  (Prometheus text, per-node registry) on a local HTTP port; key=value logs.
* :mod:`aura_sync.node.node`: :class:`Node` (root supervisor -> transport,
  infrastructure, protocols) and :func:`run_node` (the ``aura-sync node``
  process: clean stop on SIGINT/SIGTERM, exit code 1 if the root gave up).
* :mod:`aura_sync.node.demo`: ``aura-sync demo`` (a loopback cluster that
  converges through injected faults).

Names are loaded on first use, so importing the configuration does not
import the whole runtime.

Layer: runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aura_sync.node.config import BootstrapPeer, NodeConfig, load_config
    from aura_sync.node.demo import DemoOptions, DemoResult, run_demo
    from aura_sync.node.metrics import MetricsServer, NodeSnapshot, configure_logging
    from aura_sync.node.node import Node, run_node

__all__ = [
    "BootstrapPeer",
    "DemoOptions",
    "DemoResult",
    "MetricsServer",
    "Node",
    "NodeConfig",
    "NodeSnapshot",
    "configure_logging",
    "load_config",
    "run_demo",
    "run_node",
]

_WHERE = {
    "BootstrapPeer": "config",
    "NodeConfig": "config",
    "load_config": "config",
    "DemoOptions": "demo",
    "DemoResult": "demo",
    "run_demo": "demo",
    "MetricsServer": "metrics",
    "NodeSnapshot": "metrics",
    "configure_logging": "metrics",
    "Node": "node",
    "run_node": "node",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'aura_sync.node' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aura_sync.node.{module}"), name)
    globals()[name] = value
    return value
