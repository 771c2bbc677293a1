"""How the monitor writes things: status badges, times, durations, shortened values.

Plain functions of plain data (no streamlit), so they are tested alone. Every
string read from a database is shown by the views as text (``st.text``,
``st.code``, ``st.dataframe``, select box options); no Markdown label or heading
holds one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

#: A badge for every status a run can show (``interrupted``: running, owner gone).
STATUS_EMOJI: dict[str, str] = {
    "queued": "⏳",
    "running": "🔄",
    "paused": "⏸️",
    "completed": "✅",
    "failed": "❌",
    "cancelled": "🚫",
    "interrupted": "⚠️",
}
#: The statuses in the order the monitor lists them.
STATUSES = tuple(STATUS_EMOJI)
#: Values longer than this are shortened in tables (the whole value is one click away).
SHORT = 120


def badge(status: str | None) -> str:
    """``"✅ completed"``; an unknown status gets ``❓``."""
    status = status or "unknown"
    return f"{STATUS_EMOJI.get(status, '❓')} {status}"


def parse_ts(text: str | None) -> datetime | None:
    """A stored ISO-8601 timestamp as an aware datetime (UTC when it has no zone)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def short_ts(text: str | None) -> str:
    """``2026-11-29 10:04:22`` (UTC) from a stored timestamp; ``—`` for none."""
    moment = parse_ts(text)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if moment else "—"


def run_seconds(run: dict[str, Any], now: datetime | None = None) -> float | None:
    """How long a run ran: to its end, to its last heartbeat if it stopped without an
    end (paused, interrupted), or to now while it runs."""
    began = parse_ts(run.get("started_at"))
    if began is None:
        return None
    status = run.get("status")
    if status in ("running", "queued"):
        end = now or datetime.now(timezone.utc)
    else:
        end = parse_ts(run.get("completed_at")) or parse_ts(run.get("heartbeat_at"))
        if end is None:
            return None
    return max(0.0, (end - began).total_seconds())


def fmt_seconds(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4.1 min``, ``2.0 h``; ``—`` for unknown."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def one_line(text: str) -> str:
    """Newlines and tabs as spaces (table cells are one line)."""
    return " ".join(text.split()) if any(c in text for c in "\n\r\t") else text


def truncate(text: str | None, limit: int = SHORT) -> str:
    """*text* on one line, cut to *limit* characters with ``…`` (and the full length)."""
    if text is None:
        return ""
    text = one_line(str(text))
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} chars)"


def json_text(value: Any, *, indent: int | None = None) -> str:
    """*value* as JSON text, as stored (unicode kept, NaN as Python writes it)."""
    return visible(json.dumps(value, indent=indent, ensure_ascii=False, default=repr))


def visible(text: str) -> str:
    """*text* as the page can carry it: a lone surrogate (half of a UTF-16 pair, which
    PocoFlow stores and gives back) or a NUL as its escape, as the database stores them
    (:func:`pocoflow.persistence.rows.storable`); anything else as it is."""
    from pocoflow.persistence.rows import storable

    return str(storable(text))


def value_type(value: Any) -> str:
    """The JSON type of a stored value, or the codec's tag (``datetime``, ``set``...)."""
    if isinstance(value, dict) and isinstance(value.get("__pf__"), str):
        return value["__pf__"]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return type(value).__name__
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "dict"
