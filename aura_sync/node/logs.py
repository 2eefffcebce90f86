"""Structured logging of a node: one record per line, as ``key=value`` text or JSON.

Every line carries ``ts``, ``level``, ``logger`` and ``event``.  The
project logs ``"event=NAME key=%s ..."`` messages; such a message keeps its
fields, and any other message becomes ``event=log msg="..."``.

* ``text`` (:class:`KeyValueFormatter`): ``ts=... level=INFO logger=...
  event=sync_round peer=... ops=3``; values with spaces or quotes are
  JSON-quoted.
* ``json`` (:class:`JsonFormatter`): one JSON object per line, the message
  fields as keys (values stay strings as logged).

An exception is a structured field in both: ``exc_type``, ``exc_message``
and ``traceback`` (text: the traceback JSON-quoted on the same line; JSON:
a list of its lines).  :func:`configure_logging` installs one handler.

Layer: runtime.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from typing import Any, Final, TextIO

from aura_sync.errors import InvalidArgument

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "KeyValueFormatter",
    "configure_logging",
    "kv",
    "record_fields",
]

LOG_FORMATS: Final = ("text", "json")
"""The values of ``--log-format`` / the ``log_format`` config key."""

_BARE: Final = re.compile(r"^[A-Za-z0-9_.:/@\-+%,\[\]#]+$")
_KV_START: Final = re.compile(r"^[a-z_][a-z0-9_]*=")
_FIELD: Final = re.compile(r'\s*([a-z_][a-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')
_RESERVED: Final = frozenset({"ts", "level", "logger"})


def _value(value: object) -> str:
    text = (
        value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    )
    if text and _BARE.match(text):
        return text
    return json.dumps(text)


def kv(**fields: object) -> str:
    """``key=value`` text for a log call; values with spaces or quotes are JSON-quoted."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


def _parse_fields(message: str) -> dict[str, str] | None:
    """The fields of a ``key=value ...`` message, or None if it is not one throughout."""
    if not _KV_START.match(message):
        return None
    out: dict[str, str] = {}
    pos = 0
    while pos < len(message):
        match = _FIELD.match(message, pos)
        if match is None or match.end() == pos:
            return None
        key, raw = match.group(1), match.group(2)
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                return None
        out[key if key not in _RESERVED else f"field_{key}"] = raw
        pos = match.end()
        while pos < len(message) and message[pos] == " ":
            pos += 1
    return out


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record`` (head, message fields, exception), in order."""
    message = record.getMessage()
    doc: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname,
        "logger": record.name,
    }
    parsed = _parse_fields(message)
    if parsed is not None and "event" in parsed:
        doc.update(parsed)
    else:
        doc["event"] = "log"
        doc["msg"] = message
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc, tb = record.exc_info
        doc["exc_type"] = exc_type.__name__
        doc["exc_message"] = str(exc)
        doc["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
    elif record.stack_info:
        doc["stack"] = record.stack_info
    return doc


class KeyValueFormatter(logging.Formatter):
    """One ``key=value`` line per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line."""
        doc = record_fields(record)
        head = f"ts={doc.pop('ts')} level={doc.pop('level')} logger={doc.pop('logger')}"
        return head + "".join(f" {k}={_value(v)}" for k, v in doc.items()).replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the traceback is a list of lines."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one JSON line."""
        doc = record_fields(record)
        if "traceback" in doc:
            doc["traceback"] = doc["traceback"].splitlines()
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, fmt: str = "text"
) -> logging.Handler:
    """Install one handler on the root logger at ``level`` in ``fmt``; return it.

    ``level`` is a logging level name (any case); ``fmt`` is ``"text"`` or
    ``"json"``.  Calling it again replaces the handler it installed before
    (others are left alone).

    Raises:
        InvalidArgument: an unknown level or format.
    """
    if type(level) is not str or level.upper() not in logging.getLevelNamesMapping():
        raise InvalidArgument(f"level must be a logging level name, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise InvalidArgument(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler._aura_sync = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_aura_sync", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
