"""``pocoflow monitor``: checks, then ``pocoflow.ui.server.serve`` (a stand-in here)."""

from __future__ import annotations

import errno
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pocoflow
from pocoflow import WorkflowDB
from pocoflow.cli import main

Capture = pytest.CaptureFixture[str]
INSTALL = "pip install 'pocoflow[ui]'"


def run_cli(capsys: Capture, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ui_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever the test puts in place of pocoflow.ui and pocoflow.ui.server is gone after."""
    had = pocoflow.__dict__.get("ui")
    for name in ("pocoflow.ui", "pocoflow.ui.server"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    if had is None:
        pocoflow.__dict__.pop("ui", None)
    else:
        pocoflow.ui = had  # type: ignore[attr-defined]


@pytest.fixture
def serve_calls(ui_modules: None, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in pocoflow.ui.server whose serve() records its arguments."""
    calls: list[dict[str, Any]] = []
    server = types.ModuleType("pocoflow.ui.server")

    def serve(db: str, *, port: int = 8501, host: str = "127.0.0.1",
              flow: str | None = None) -> Any:
        calls.append({"db": db, "port": port, "host": host, "flow": flow})
        return server.outcome(calls[-1]) if hasattr(server, "outcome") else None

    server.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pocoflow.ui.server", server)
    return calls


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    WorkflowDB(path).create_run("r1", "f")
    return path


def test_monitor_serves_the_database_on_this_machine(serve_calls: list[dict[str, Any]],
                                                     database: Path, capsys: Capture) -> None:
    """`pocoflow monitor DB` calls serve(DB) on 127.0.0.1:8501 and says nothing else."""
    assert (0, "", "") == run_cli(capsys, "monitor", database)
    assert [{"db": str(database), "port": 8501, "host": "127.0.0.1", "flow": None}] == \
        serve_calls


def test_monitor_serve_may_be_named_serve_monitor(ui_modules: None, database: Path,
                                                  capsys: Capture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """pocoflow.ui.server.serve_monitor is called when there is no serve()."""
    calls = []
    server = types.ModuleType("pocoflow.ui.server")
    server.serve_monitor = lambda db, **options: calls.append((db, options))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pocoflow.ui.server", server)
    assert 0 == run_cli(capsys, "monitor", database, "--port", "8502")[0]
    assert [(str(database), {"port": 8502, "host": "127.0.0.1", "flow": None})] == calls


def test_monitor_options(serve_calls: list[dict[str, Any]], database: Path, capsys: Capture,
                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--port, --host and --flow reach serve(); --flow is checked first (it must name a
    Flow) and passed on as MODULE:FLOW; listening beyond this machine is pointed out."""
    (tmp_path / "pf_monitor_flows.py").write_text(
        "from pocoflow import Flow, Node\nflow = Flow(Node(), flow_name='f')\n")
    monkeypatch.chdir(tmp_path)
    try:
        code, _, err = run_cli(capsys, "monitor", database, "--port", "9000", "--host",
                               "localhost", "--flow", "pf_monitor_flows:flow")
        assert (0, "") == (code, err)
        code, _, err = run_cli(capsys, "monitor", database, "--host", "0.0.0.0")
    finally:
        sys.modules.pop("pf_monitor_flows", None)
    assert 0 == code
    assert "pocoflow: note: the monitor listens on 0.0.0.0:8501, where other machines can " \
           "reach it" in err
    assert [("localhost", 9000, "pf_monitor_flows:flow"), ("0.0.0.0", 8501, None)] == [
        (c["host"], c["port"], c["flow"]) for c in serve_calls]


def test_monitor_refuses_a_flow_that_is_not_one(serve_calls: list[dict[str, Any]],
                                               database: Path, capsys: Capture) -> None:
    """A --flow that does not import is a one-line error before anything is served."""
    code, out, err = run_cli(capsys, "monitor", database, "--flow", "pf_no_such_mod:flow")
    assert (1, "") == (code, out)
    assert "Cannot import module 'pf_no_such_mod'" in err
    assert [] == serve_calls


def test_monitor_never_creates_a_database(serve_calls: list[dict[str, Any]], tmp_path: Path,
                                          capsys: Capture) -> None:
    """A missing database is a one-line error naming it and `db upgrade`; nothing is
    created and nothing served. A file that is no database is refused too."""
    code, out, err = run_cli(capsys, "monitor", tmp_path / "no" / "x.db")
    assert (1, "") == (code, out)
    assert f"No database at {tmp_path / 'no' / 'x.db'}: no such file" in err
    assert "pocoflow db upgrade" in err
    assert not (tmp_path / "no").exists()
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "monitor", tmp_path / "notes.txt")
    assert 1 == code
    assert "is not a SQLite database" in err
    assert [] == serve_calls


def test_monitor_ends_quietly_on_ctrl_c(serve_calls: list[dict[str, Any]], database: Path,
                                        capsys: Capture) -> None:
    """Ctrl-C while serving is the way to stop the monitor: exit 0, nothing printed."""
    def interrupted(_: Any) -> None:
        raise KeyboardInterrupt

    sys.modules["pocoflow.ui.server"].outcome = interrupted  # type: ignore[attr-defined]
    assert (0, "", "") == run_cli(capsys, "monitor", database)


def test_monitor_port_in_use(serve_calls: list[dict[str, Any]], database: Path,
                             capsys: Capture) -> None:
    """A port already in use is a one-line error that says to pick another."""
    def in_use(_: Any) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")

    sys.modules["pocoflow.ui.server"].outcome = in_use  # type: ignore[attr-defined]
    code, out, err = run_cli(capsys, "monitor", database, "--port", "8600")
    assert (1, "") == (code, out)
    assert "pocoflow: error: Port 8600 on 127.0.0.1 is in use; pick another with --port N.\n" \
        == err


def test_monitor_exit_code_of_serve(serve_calls: list[dict[str, Any]], database: Path,
                                    capsys: Capture) -> None:
    """An exit code serve() returns is the command's."""
    sys.modules["pocoflow.ui.server"].outcome = lambda _: 3  # type: ignore[attr-defined]
    assert 3 == run_cli(capsys, "monitor", database)[0]


def test_monitor_without_its_module(ui_modules: None, database: Path, capsys: Capture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pocoflow.ui.server: one line naming it and `pip install 'pocoflow[ui]'`."""
    monkeypatch.setitem(sys.modules, "pocoflow.ui.server", None)
    code, out, err = run_cli(capsys, "monitor", database)
    assert (1, "") == (code, out)
    assert f"pocoflow: error: This PocoFlow installation has no monitor (pocoflow.ui.server " \
           f"is missing): {INSTALL}.\n" == err


class _WithoutStreamlit(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """pocoflow.ui.server as it imports where Streamlit is not installed."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name in ("pocoflow.ui", "pocoflow.ui.server"):
            return importlib.util.spec_from_loader(name, self,
                                                   is_package=name == "pocoflow.ui")
        return None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__name__ == "pocoflow.ui.server":
            raise ModuleNotFoundError("No module named 'streamlit'", name="streamlit")


def test_monitor_without_streamlit(ui_modules: None, database: Path, capsys: Capture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit not installed: one line saying the monitor needs it and how to get it."""
    monkeypatch.setattr(sys, "meta_path", [_WithoutStreamlit(), *sys.meta_path])
    code, out, err = run_cli(capsys, "monitor", database)
    assert (1, "") == (code, out)
    assert f"pocoflow: error: The monitor needs Streamlit, which is not installed: " \
           f"{INSTALL}.\n" == err


def test_monitor_module_without_serve(ui_modules: None, database: Path, capsys: Capture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A pocoflow.ui.server without serve(): one line saying to reinstall."""
    monkeypatch.setitem(sys.modules, "pocoflow.ui.server", types.ModuleType("server"))
    code, _, err = run_cli(capsys, "monitor", database)
    assert 1 == code
    assert "has no serve() function" in err
