"""Row group 4, retry: the success path (a call that succeeds at once).

The same policy everywhere - 4 attempts, exponential backoff from 0.1 s capped
at 30 s - so the figure is pure machinery overhead per call:

- aura: ``RetryPolicy.exponential().with_max_attempts(4).execute(fn)`` (a
  policy built once, as a user keeps it), and the same policy as a
  ``@retry(policy)`` decorator (the form tenacity and backoff are used in);
- tenacity: a function decorated with ``@retry(stop=stop_after_attempt(4),
  wait=wait_exponential(multiplier=0.1, max=30))``;
- backoff: ``@backoff.on_exception(backoff.expo, Exception, max_tries=4,
  factor=0.1, max_value=30)``;
- a bare call of ``fn`` for scale (not a target).

All sides are measured interleaved.  Target (issue 4): aura >= 20x tenacity
(calls per second).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench._harness import Context, Target, optional_module

TENACITY_TARGET = Target(">=", 20.0)


def _ok() -> int:
    return 42


def _calls(fn: Callable[[], Any]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            fn()

    return loop


def _baseline_loops() -> tuple[dict[str, Callable[[int], None]], dict[str, str]]:
    loops: dict[str, Callable[[int], None]] = {}
    missing: dict[str, str] = {}
    try:
        import tenacity

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(4),
            wait=tenacity.wait_exponential(multiplier=0.1, max=30),
            reraise=True,
        )
        def with_tenacity() -> int:
            return _ok()

        loops["tenacity"] = _calls(with_tenacity)
    except ImportError:
        missing["tenacity"] = "tenacity is not installed (pip install aura-sync[bench])"
    try:
        import backoff

        @backoff.on_exception(backoff.expo, Exception, max_tries=4, factor=0.1, max_value=30)
        def with_backoff() -> int:
            return _ok()

        loops["backoff"] = _calls(with_backoff)
    except ImportError:
        missing["backoff"] = "backoff is not installed (pip install aura-sync[bench])"
    loops["bare call"] = _calls(_ok)
    return loops, missing


LABELS = {"tenacity": "tenacity @retry", "backoff": "backoff.on_exception"}


def run(ctx: Context) -> None:
    """Time the success path of aura and the baselines (interleaved); record the rows."""
    loops, missing = _baseline_loops()
    retry, why = optional_module("aura_sync.infrastructure.retry", "RetryPolicy")
    if retry is not None:
        policy = retry.RetryPolicy.exponential().with_max_attempts(4)
        execute = policy.execute
        loops["aura"] = _calls(lambda: execute(_ok))
        if hasattr(retry, "retry"):
            loops["aura @retry"] = _calls(retry.retry(policy)(_ok))
    stats = ctx.interleaved(loops)
    for key, target in (("tenacity", TENACITY_TARGET), ("backoff", None)):
        name = f"retry success path vs {key}"
        if key in missing:
            ctx.unavailable(name, missing[key])
            continue
        base = stats[key]
        base.label = LABELS[key]
        if retry is None:
            ctx.unavailable(name, why, baseline=base)
        else:
            aura = stats["aura"]
            aura.label = "aura RetryPolicy.execute"
            ctx.compare(name, aura, base, target=target)
    if "aura @retry" in loops and "tenacity" not in missing:
        decorated = stats["aura @retry"]
        decorated.label = "aura @retry(policy)"
        ctx.compare("retry decorator success path vs tenacity @retry", decorated, stats["tenacity"])
    if retry is not None:
        ctx.compare(
            "retry success path vs a bare call",
            stats["aura"],
            stats["bare call"],
            note="overhead, no target",
        )
