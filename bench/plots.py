"""PNG plots of a results document: one figure per row group, higher is always better.

Every ratio row is drawn as its *advantage* over the baseline measured in the
same run: ``ratio`` for a throughput (ops/s) and ``1 / ratio`` for a time or a
size (ns/op, us/op, bytes/item), so a bar right of the dashed 1x line means
aura-sync did better, on every plot.  A ratio target is converted the same way.
A target on an absolute figure (``p99_us <= 2000``, ``max <= 0`` lost messages)
gets its own panel, one per figure and unit, never the ratio axis.  Each figure
has a legend; labels are wrapped, and the margin is sized to the longest one.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["advantage", "write_plots"]

_MET, _MISSED, _NO_TARGET = "#2e7d32", "#c62828", "#78909c"
_LABEL_WIDTH = 46  # characters per label line
_ON_TITLES = {"p99_us": "p99 latency (µs)", "p50_us": "p50 latency (µs)", "max": "worst repetition"}


def advantage(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """``(median, worst, best)`` times better than the baseline (> 1: aura-sync is better)."""
    ratio, lo, hi = row.get("ratio"), row.get("ratio_min"), row.get("ratio_max")
    if not ratio or not lo or not hi or not all(map(math.isfinite, (ratio, lo, hi))):
        return None
    if row.get("higher_is_better") is False:
        return 1 / ratio, 1 / hi, 1 / lo
    return ratio, lo, hi


def _target_advantage(row: dict[str, Any]) -> float | None:
    target = row.get("target")
    if not target or target.get("on", "ratio") != "ratio" or target["value"] <= 0:
        return None
    value = float(target["value"])
    return 1 / value if row.get("higher_is_better") is False else value


def _label(row: dict[str, Any]) -> str:
    cpu = {True: " [pinned]", False: " [unpinned]", None: ""}[row["pinned"]]
    return "\n".join(textwrap.wrap(row["name"] + cpu, _LABEL_WIDTH)) or row["name"]


def _color(row: dict[str, Any], *, on: str = "ratio") -> str:
    """Green or red by the row's target if that target is on ``on``, else grey."""
    target = row.get("target") or {}
    if target.get("on", "ratio") != on:
        return _NO_TARGET
    return {True: _MET, False: _MISSED}.get(row["met"], _NO_TARGET)


def _subject(row: dict[str, Any]) -> float | None:
    on = row["target"]["on"]
    measured = row.get("measured") or {}
    value = measured.get(on) if on in ("median", "max") else (measured.get("extra") or {}).get(on)
    return float(value) if isinstance(value, int | float) else None


def _legend(ax: Any, *, ratio_axis: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color=_MET, label="target met"),
        Patch(color=_MISSED, label="target missed"),
        Patch(color=_NO_TARGET, label="no target"),
        Line2D([], [], color="black", lw=2, label="target"),
    ]
    if ratio_axis:
        handles += [
            Line2D([], [], color="black", lw=1, marker="|", label="min-max of repetitions"),
            Line2D([], [], color="grey", lw=0.8, ls="--", label="same as baseline (1x)"),
        ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)


def _ratio_panel(ax: Any, rows: list[dict[str, Any]]) -> None:
    ys = list(range(len(rows)))
    adv = [advantage(r) for r in rows]
    med = [a[0] for a in adv if a]
    err = [[a[0] - a[1] for a in adv if a], [a[2] - a[0] for a in adv if a]]
    ax.barh(ys, med, xerr=err, color=[_color(r) for r in rows], capsize=2)
    for y, r in zip(ys, rows, strict=True):
        goal = _target_advantage(r)
        if goal is not None:
            ax.plot([goal, goal], [y - 0.42, y + 0.42], color="black", lw=2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(r) for r in rows], fontsize=7)
    ax.invert_yaxis()
    if max(med) / max(min(med), 1e-12) > 30:
        ax.set_xscale("log")
    ax.set_xlabel(
        "times better than the baseline (higher is better; time and size rows inverted)",
        fontsize=8,
    )
    _legend(ax, ratio_axis=True)


def _absolute_panel(ax: Any, on: str, rows: list[dict[str, Any]]) -> None:
    ys = list(range(len(rows)))
    values = [_subject(r) or 0.0 for r in rows]
    unit = (rows[0].get("measured") or {}).get("unit", "")
    ax.barh(ys, values, color=[_color(r, on=on) for r in rows])
    top = 1.0 if unit == "lost/sent" else max([*values, *(r["target"]["value"] for r in rows)])
    low = min([*values, *(r["target"]["value"] for r in rows)])
    log = low > 0 and top / low > 100  # figures far apart: a log axis shows every one
    for y, r, v in zip(ys, rows, values, strict=True):
        t = r["target"]
        ax.plot([t["value"]] * 2, [y - 0.42, y + 0.42], color="black", lw=2)
        sign = "≤" if t["op"] == "<=" else "≥"
        mark = {True: "met", False: "missed"}.get(r["met"], "")
        extra = (r.get("measured") or {}).get("extra") or {}
        shown = f"{extra['lost']:g} of {extra['sent']:g} lost" if "lost" in extra else f"{v:g}"
        note = f" {shown} (target {sign} {t['value']:g}: {mark})"
        ax.text(v * 1.1 if log else top * 0.01 + v, y, note, va="center", fontsize=7)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(low / 2, top * 60)
    else:
        ax.set_xlim(0, top * 1.6 if top > 0 else 1.0)
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(r) for r in rows], fontsize=7)
    ax.invert_yaxis()
    better = "lower" if rows[0]["target"]["op"] == "<=" else "higher"
    title = _ON_TITLES.get(on, on) + (f", {unit}" if on in ("median", "max") else "")
    ax.set_xlabel(f"{title} ({better} is better)", fontsize=8)
    _legend(ax, ratio_axis=False)


def write_plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Write ``<mode>_<group>.png`` for every group with measured rows; return the paths.

    Uses matplotlib's Agg backend; writes nothing if matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    mode = doc["header"]["mode"]
    written: list[Path] = []
    for group in doc["groups"]:
        ok = [r for r in group["rows"] if r["status"] == "ok"]
        absolute: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in ok:  # one panel per figure and unit: bytes and microseconds never share an axis
            if r.get("target") and r["target"].get("on", "ratio") != "ratio":
                unit = (r.get("measured") or {}).get("unit", "")
                absolute.setdefault((r["target"]["on"], unit), []).append(r)
        ratio_rows = [r for r in ok if advantage(r)]
        panels: list[tuple[str, list[dict[str, Any]]]] = []
        if ratio_rows:
            panels.append(("ratio", ratio_rows))
        panels += [(on, rows) for (on, _unit), rows in sorted(absolute.items())]
        if not panels:
            continue
        lines = [sum(_label(r).count("\n") + 1 for r in rows) for _, rows in panels]
        heights = [0.2 * n + 0.9 for n in lines]
        total = sum(heights) + 0.7
        longest = max(
            len(line) for _, rows in panels for r in rows for line in _label(r).split("\n")
        )
        width = 12.0
        fig, axes = plt.subplots(
            len(panels), 1, figsize=(width, total), gridspec_kw={"height_ratios": heights},
            squeeze=False,
        )  # fmt: skip
        for ax, (kind, rows) in zip(axes[:, 0], panels, strict=True):
            if kind == "ratio":
                _ratio_panel(ax, rows)
            else:
                _absolute_panel(ax, kind, rows)
        fig.suptitle(f"{group['number']}. {group['title']} ({mode})", fontsize=10)
        left = min(0.6, (0.062 * longest + 0.25) / width)  # inches of label text, as a fraction
        fig.subplots_adjust(
            left=left,
            right=1 - 1.9 / width,
            top=1 - 0.45 / total,
            bottom=0.55 / total,
            hspace=1.8 / total,
        )
        path = out / f"{mode}_{group['key']}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
