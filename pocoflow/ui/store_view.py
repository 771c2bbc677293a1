"""The Store Inspector tab: the store after any step, what the step changed, whole values.

Stores come from ``get_checkpoint_json`` (JSON as stored, nothing decoded). A
value the checkpoint codec tagged (a datetime, a set, a dataclass...) shows
as its tagged JSON, with the tag as its type.
"""

from __future__ import annotations

import re
from typing import Any

from pocoflow.ui.data import INPUT_STEP, MonitorData
from pocoflow.ui.text import json_text, short_ts, truncate, value_type, visible

#: Characters of a whole value or raw store shown on the page (the rest: download).
SHOWN_WHOLE = 200_000


def shown(value: Any) -> str:
    """A stored value as text: a string as it is, anything else as JSON."""
    return visible(value) if isinstance(value, str) else json_text(value)


def store_rows(store: dict[str, Any]) -> list[dict[str, Any]]:
    """Key, type, size (characters of its JSON) and shortened value of every key."""
    rows = []
    for key, value in store.items():
        text = shown(value)
        rows.append(
            {
                "key": visible(key),
                "type": value_type(value),
                "chars": len(text),
                "value": truncate(text),
            }
        )
    return rows


def same(a: Any, b: Any) -> bool:
    """Equal as stored JSON: ``1`` and ``true`` differ (Python finds ``1 == True``), inside
    lists and dicts too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def diff_rows(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The keys a step added, removed or changed, with their values before and after."""
    rows = []
    for key in after:
        if key not in before:
            rows.append(
                {
                    "key": visible(key),
                    "change": "added",
                    "before": "",
                    "after": truncate(shown(after[key])),
                }
            )
        elif not same(before[key], after[key]):
            rows.append(
                {
                    "key": visible(key),
                    "change": "changed",
                    "before": truncate(shown(before[key])),
                    "after": truncate(shown(after[key])),
                }
            )
    rows.extend(
        {
            "key": visible(key),
            "change": "removed",
            "before": truncate(shown(before[key])),
            "after": "",
        }
        for key in before
        if key not in after
    )
    return rows


def step_label(step: int) -> str:
    return "input" if step == INPUT_STEP else f"step {step}"


# ── view ────────────────────────────────────────────────────────────────────


def render_store_inspector(data: MonitorData, run_id: str, key: str) -> None:
    """Step slider, key/value table, diff with the step before, whole values, raw JSON."""
    import pandas as pd
    import streamlit as st

    steps = data.steps(run_id)
    options = [s["step"] for s in steps]
    if data.run_input(run_id).get("input_json"):
        options.insert(0, INPUT_STEP)
    if not options:
        st.info("No checkpoint saved for this run yet: no node has finished.")
        return
    if len(options) > 1:
        step = st.select_slider(
            "Checkpoint",
            options=options,
            value=options[-1],
            format_func=step_label,
            key=f"{key}_step_{run_id}",
        )
    else:
        step = options[0]
    info = next((s for s in steps if s["step"] == step), None)
    if info is None:
        st.text("The store the run started with.")
    else:
        st.text(
            f"{step_label(step)} · after node {info['node_name']} · {info['kind']} "
            f"checkpoint · {short_ts(info['created_at'])} UTC · next: "
            f"{info.get('next_node') or '(end)'}"
        )
    try:
        store = data.store(run_id, step)
    except Exception as exc:  # a damaged row: say so, keep the page
        st.text(f"This checkpoint cannot be read: {exc}")
        return
    if not isinstance(store, dict):
        st.text(f"This checkpoint is not a JSON object: {truncate(shown(store))}")
        return
    try:
        rows = store_rows(store)
        position = options.index(step)
        before_step = options[position - 1] if position > 0 else None
        changes = (
            diff_rows(data.store(run_id, before_step), store) if before_step is not None else None
        )
    except (RecursionError, ValueError) as exc:  # nested deeper than Python's stack
        st.text(f"This store cannot be shown as a table: {exc}")
        return
    st.dataframe(pd.DataFrame(rows, columns=["key", "type", "chars", "value"]), hide_index=True)
    if before_step is not None and changes is not None:
        st.caption(f"Changes from {step_label(before_step)}: {len(changes)} key(s)")
        if changes:
            st.dataframe(pd.DataFrame(changes), hide_index=True)

    if store:
        names = list(store)
        chosen = st.selectbox(
            "Whole value of",
            names,
            index=None,
            key=f"{key}_whole_{run_id}",
            placeholder="choose a key",
            format_func=visible,
        )
        if chosen is not None and chosen in store:
            _whole(shown(store[chosen]), f"{run_id}-{step_label(step)}-value.txt", key)
    with st.expander("Raw JSON"):
        _whole(
            json_text(store, indent=2), f"{run_id}-{step_label(step)}.json", key, language="json"
        )


def _whole(text: str, filename: str, key: str, language: str | None = None) -> None:
    import streamlit as st

    if len(text) > SHOWN_WHOLE:
        st.caption(f"The first {SHOWN_WHOLE:,} of {len(text):,} characters; download the rest.")
        st.code(text[:SHOWN_WHOLE], language=language)
    else:
        st.code(text, language=language)
    safe_name = re.sub(r"[^\w.-]", "_", filename)[:120]
    st.download_button(
        "Download", text, file_name=safe_name, mime="text/plain", key=f"{key}_download_{filename}"
    )
