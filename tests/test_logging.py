"""Logging: setup_logging files, the pocoflow.* hierarchy, silence by default, disable_logging."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from pocoflow.logging import disable_logging, get_logger, log_event, setup_logging

LOG_NAME = re.compile(r"run-openrouter-(\d{8}-\d{6})\.log")


@pytest.fixture(autouse=True)
def restore_pocoflow_logging() -> Iterator[None]:
    """Put the ``pocoflow`` logger back as it was: no file stays open, no handler leaks."""
    root = logging.getLogger("pocoflow")
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    yield
    disable_logging()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = propagate


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run *code* with ``python -c`` in a fresh interpreter (no DD_LOG_* overrides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_LOG_")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=False, timeout=120)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    """The JSON objects of a JSONL file, one per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


BROKEN_OBSERVER = """
from pocoflow import Store

def broken(key, old, new):
    raise RuntimeError("observer bug")

store = Store(name="quiet")
store.add_observer(broken)
store["x"] = 1
"""


# ── setup_logging ───────────────────────────────────────────────────────────


def test_setup_logging_returns_a_timestamped_file_that_receives_records(tmp_path: Path) -> None:
    """setup_logging returns <dir>/run-openrouter-YYYYMMDD-HHMMSS.log and logs go there."""
    path = setup_logging("run", log_level="debug", adapter="openrouter", log_dir=tmp_path)
    match = LOG_NAME.fullmatch(path.name)
    assert match is not None, path.name
    datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")  # a real timestamp
    assert tmp_path.resolve() == path.parent
    log = get_logger("nodes.summarise")
    log.info("summarising  len=%d", 1234)
    log.debug("debug detail")
    text = path.read_text(encoding="utf-8")
    assert "pocoflow.nodes.summarise" in text
    assert "summarising  len=1234" in text
    assert "debug detail" in text


def test_seed_readme_logging_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 0.2 README's logging example writes logs/run-openrouter-<ts>.log under the cwd."""
    monkeypatch.chdir(tmp_path)
    text = "some document"

    # Configurar una vez al inicio de la app
    log_path = setup_logging("run", log_level="debug", adapter="openrouter")
    # → logs/run-openrouter-20260217-143022.log

    # En cualquier módulo
    _log = get_logger("nodes.summarise")   # → pocoflow.nodes.summarise
    _log.info("summarising  len=%d", len(text))

    assert "pocoflow.nodes.summarise" == _log.name
    assert (tmp_path / "logs").resolve() == log_path.parent
    assert LOG_NAME.fullmatch(log_path.name) is not None, log_path.name
    assert "summarising  len=13" in log_path.read_text(encoding="utf-8")


def test_log_level_filters_what_reaches_the_file(tmp_path: Path) -> None:
    """With log_level='warning' the file gets warnings but not info or debug records."""
    path = setup_logging("run", log_level="warning", log_dir=tmp_path)
    log = get_logger("flow")
    log.debug("debug-line")
    log.info("info-line")
    log.warning("warning-line")
    text = path.read_text(encoding="utf-8")
    assert "warning-line" in text
    assert "info-line" not in text
    assert "debug-line" not in text


def test_setup_logging_rejects_an_unknown_level(tmp_path: Path) -> None:
    """A log_level that is not a level name raises ValueError naming it, not a silent default."""
    with pytest.raises(ValueError, match="verbose"):
        setup_logging("run", log_level="verbose", log_dir=tmp_path)


def test_setup_logging_rejects_an_unknown_format(tmp_path: Path) -> None:
    """A log_format other than text, jsonl or both raises ValueError naming it."""
    with pytest.raises(ValueError, match="xml"):
        setup_logging("run", log_dir=tmp_path, log_format="xml")


def test_setup_logging_again_replaces_the_previous_file(tmp_path: Path) -> None:
    """A second setup_logging call sends records to the new file only."""
    first = setup_logging("first", log_dir=tmp_path / "a")
    second = setup_logging("second", log_dir=tmp_path / "b")
    get_logger("flow").warning("after-second-setup")
    assert "after-second-setup" not in first.read_text(encoding="utf-8")
    assert "after-second-setup" in second.read_text(encoding="utf-8")


def test_console_true_also_logs_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """console=True adds stderr output next to the file."""
    path = setup_logging("run", log_dir=tmp_path, console=True)
    get_logger("db").warning("to-both")
    assert "to-both" in capsys.readouterr().err
    assert "to-both" in path.read_text(encoding="utf-8")


def test_jsonl_format_writes_json_lines(tmp_path: Path) -> None:
    """log_format='jsonl' writes one JSON object per record with level, logger and message."""
    path = setup_logging("run", log_dir=tmp_path, log_format="jsonl")
    assert ".jsonl" == path.suffix
    get_logger("store").info("first %s", "record")
    get_logger("node").warning("second")
    entries = read_jsonl(path)
    assert 2 == len(entries)
    assert ["pocoflow.store", "pocoflow.node"] == [e["logger"] for e in entries]
    assert ["INFO", "WARNING"] == [e["level"] for e in entries]
    assert ["first record", "second"] == [e["msg"] for e in entries]


def test_log_event_writes_structured_fields_to_jsonl(tmp_path: Path) -> None:
    """log_event puts the event name and every field as keys of the JSON line."""
    path = setup_logging("run", log_dir=tmp_path, log_format="jsonl")
    log_event(get_logger("flow"), "node_end", run_id="summarise-1", node_name="Summarise",
              step=2, elapsed_ms=12.5)
    [entry] = read_jsonl(path)
    assert "node_end" == entry["event"]
    assert "summarise-1" == entry["run_id"]
    assert "Summarise" == entry["node_name"]
    assert 2 == entry["step"]
    assert 12.5 == entry["elapsed_ms"]
    assert "pocoflow.flow" == entry["logger"]
    assert str(entry["msg"]).startswith("node_end ")


def test_log_event_below_the_file_level_writes_nothing(tmp_path: Path) -> None:
    """A log_event at DEBUG does not reach a file configured for INFO."""
    path = setup_logging("run", log_dir=tmp_path, log_format="jsonl", log_level="info")
    log_event(get_logger("flow"), "noisy", level=logging.DEBUG, step=1)
    log_event(get_logger("flow"), "kept", step=2)
    assert ["kept"] == [e["event"] for e in read_jsonl(path)]


# ── the logger hierarchy ────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nodes.summarise", "pocoflow.nodes.summarise"),
        ("store", "pocoflow.store"),
        ("node", "pocoflow.node"),
        ("flow", "pocoflow.flow"),
        ("db", "pocoflow.db"),
        ("runner", "pocoflow.runner"),
        ("pocoflow.store", "pocoflow.store"),
    ],
)
def test_get_logger_names_live_under_pocoflow(name: str, expected: str) -> None:
    """get_logger(name) returns the logger pocoflow.<name>, children of the pocoflow root."""
    log = get_logger(name)
    assert expected == log.name
    assert log is logging.getLogger(expected)


def test_get_logger_without_a_name_is_the_pocoflow_root() -> None:
    """get_logger() returns the root 'pocoflow' logger that setup_logging configures."""
    assert logging.getLogger("pocoflow") is get_logger()


# ── silence ─────────────────────────────────────────────────────────────────


def test_library_is_silent_by_default() -> None:
    """Without setup_logging, a pocoflow warning (a failing Store observer) prints nothing."""
    code = BROKEN_OBSERVER + (
        "from pocoflow.logging import get_logger\n"
        "get_logger('flow').warning('direct warning')\n"
        "print(store['x'])\n"
    )
    result = run_python(code)
    assert 0 == result.returncode, result.stderr
    assert "" == result.stderr
    assert "1\n" == result.stdout


def test_disable_logging_stops_file_records(tmp_path: Path) -> None:
    """After disable_logging nothing more is written to the log file."""
    path = setup_logging("run", log_level="debug", log_dir=tmp_path)
    log = get_logger("flow")
    log.warning("before-disable")
    disable_logging()
    log.error("after-disable")
    text = path.read_text(encoding="utf-8")
    assert "before-disable" in text
    assert "after-disable" not in text


def test_disable_logging_silences_file_and_stderr_in_a_fresh_process(tmp_path: Path) -> None:
    """After setup_logging(console=True) then disable_logging, no record reaches file or stderr."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)  # the app logs everything to stderr\n"
        "from pocoflow.logging import disable_logging, get_logger, setup_logging\n"
        "path = setup_logging('run', log_level='debug', log_dir=sys.argv[1], console=True)\n"
        "get_logger('flow').warning('before-disable')\n"
        "disable_logging()\n"
        "get_logger('flow').error('after-disable')\n"
        + BROKEN_OBSERVER
        + "print(path)\n"
    )
    result = run_python(code, str(tmp_path))
    assert 0 == result.returncode, result.stderr
    text = Path(result.stdout.strip()).read_text(encoding="utf-8")
    assert "before-disable" in text
    assert "after-disable" not in text
    assert "observer" not in text
    assert "before-disable" in result.stderr
    assert "after-disable" not in result.stderr
    assert "observer" not in result.stderr


def test_disabled_logging_costs_only_a_level_check() -> None:
    """After setup_logging then disable_logging, pocoflow loggers are off for INFO and DEBUG.

    So log_event and _log.debug return at once instead of building records for a NullHandler.
    """
    code = (
        "import logging, sys, tempfile\n"
        "from pocoflow.logging import disable_logging, get_logger, setup_logging\n"
        "log = get_logger('flow')\n"
        "before = (log.isEnabledFor(logging.DEBUG), log.isEnabledFor(logging.INFO))\n"
        "with tempfile.TemporaryDirectory() as folder:\n"
        "    setup_logging('run', log_level='debug', log_dir=folder)\n"
        "    disable_logging()\n"
        "after = (log.isEnabledFor(logging.DEBUG), log.isEnabledFor(logging.INFO))\n"
        "print(before, after)\n"
    )
    result = run_python(code)
    assert 0 == result.returncode, result.stderr
    assert "(False, False) (False, False)" == result.stdout.strip()


def test_a_run_logs_its_events_as_structured_jsonl(tmp_path: Path) -> None:
    """With logging set up, a run writes flow_start/node_start/node_end/flow_end events."""
    from pocoflow import Flow, Node

    class Greet(Node):
        def post(self, store, prep_res, exec_res):
            store["greeting"] = "hi"

    path = setup_logging("run", log_dir=tmp_path, log_format="jsonl")
    Flow(Greet(), flow_name="logged", run_id="logged-1").run({})

    events = [r for r in read_jsonl(path) if r.get("logger") == "pocoflow.flow" and "event" in r]
    assert ["flow_start", "node_start", "node_end", "flow_end"] == [e["event"] for e in events]
    node_end = events[2]
    assert ("logged-1", "Greet", "default") == (
        node_end["run_id"], node_end["node_name"], node_end["action"])
    assert isinstance(node_end["elapsed_ms"], float)
    assert "completed" == events[3]["status"]


def test_a_run_logs_node_start_and_end_on_pocoflow_node_as_02_did(
        caplog: pytest.LogCaptureFixture) -> None:
    """With pocoflow.node enabled for INFO, each node logs "→ Node 'X' starting" and
    "← Node 'X' done  action=...  1.23s" there, as pocoflow 0.2 did; nested flows' nodes
    too, each line once."""
    from pocoflow import Flow, Node

    class Inner(Node):
        def post(self, store, prep_res, exec_res):
            return "inner-done"

    class Outer(Node):
        def post(self, store, prep_res, exec_res):
            return "next"

    outer = Outer()
    outer.then("next", Flow(Inner(), flow_name="Sub"))
    with caplog.at_level(logging.INFO, logger="pocoflow.node"):
        Flow(outer).run({})

    lines = [re.sub(r"\d+\.\d\ds$", "<t>s", r.getMessage())
             for r in caplog.records if r.name == "pocoflow.node"]
    assert ["→ Node 'Outer' starting",
            "← Node 'Outer' done  action='next'  <t>s",
            "→ Node 'Sub' starting",  # the nested flow is a step of the outer run
            "→ Node 'Inner' starting",
            "← Node 'Inner' done  action='inner-done'  <t>s",
            "← Node 'Sub' done  action='inner-done'  <t>s"] == lines
    assert {logging.INFO} == {r.levelno for r in caplog.records if r.name == "pocoflow.node"}


def test_node_logging_adds_no_sink_while_pocoflow_node_is_off_for_info() -> None:
    """A run gets a NodeLogSink only when pocoflow.node is enabled for INFO (checked once
    per run), so disabled node logging costs nothing per step."""
    from pocoflow import Flow, Node
    from pocoflow.sinks import NodeLogSink, sinks_for

    flow = Flow(Node())
    node_log = logging.getLogger("pocoflow.node")
    level = node_log.level
    try:
        node_log.setLevel(logging.WARNING)
        off = sinks_for(flow)
        node_log.setLevel(logging.INFO)
        on = sinks_for(flow)
    finally:
        node_log.setLevel(level)
    assert [] == [s for s in off if isinstance(s, NodeLogSink)]
    assert 1 == len([s for s in on if isinstance(s, NodeLogSink)])
