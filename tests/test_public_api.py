"""The public surface: __all__, the error family, a light import, py.typed, the example."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pocoflow
from pocoflow import errors

ROOT = Path(__file__).resolve().parents[1]

ERROR_TYPES = sorted(
    (obj for obj in vars(errors).values()
     if isinstance(obj, type) and obj.__module__ == errors.__name__),
    key=lambda cls: cls.__name__,
)


def test_all_is_sorted() -> None:
    """pocoflow.__all__ is kept in sorted order."""
    assert sorted(pocoflow.__all__) == pocoflow.__all__


def test_every_name_in_all_is_importable() -> None:
    """Every name in __all__ imports from pocoflow, including through a star import."""
    namespace: dict[str, object] = {}
    exec("from pocoflow import *", namespace)

    assert [] == [name for name in pocoflow.__all__ if namespace.get(name) is None]


def test_all_lists_the_documented_api_and_every_error_type() -> None:
    """__all__ holds the documented classes and every exception and warning in pocoflow.errors."""
    documented = {"Store", "Node", "AsyncNode", "BatchNode", "AsyncBatchNode", "Flow",
                  "RunHandle", "Pause", "WorkflowDB", "AsyncWorkflowDB"}
    error_names = {cls.__name__ for cls in ERROR_TYPES}

    assert set() == (documented | error_names) - set(pocoflow.__all__)
    assert {"FlowConfigError", "MaxStepsExceeded", "NodeTimeoutError", "Pause",
            "PocoFlowError", "SchemaError"} <= error_names


def test_run_handle_from_pocoflow_is_what_run_background_returns() -> None:
    """pocoflow.RunHandle is the class of the handle Flow.run_background returns."""
    handle = pocoflow.Flow(start=pocoflow.Node()).run_background({})
    handle.wait(timeout=5)

    assert pocoflow.RunHandle is type(handle)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.SchemaError, TypeError),
        (errors.FlowConfigError, ValueError),
        (errors.MaxStepsExceeded, RuntimeError),
        (errors.NodeTimeoutError, TimeoutError),
    ],
)
def test_errors_subclass_the_builtin_a_caller_would_catch(
        error: type[Exception], builtin: type[Exception]) -> None:
    """Each PocoFlow error is caught both by its built-in type and by PocoFlowError."""
    assert issubclass(error, builtin)
    assert issubclass(error, errors.PocoFlowError)


def test_every_exception_in_errors_is_a_pocoflow_error() -> None:
    """Every exception class in pocoflow.errors (warnings aside) derives from PocoFlowError."""
    exceptions = [cls for cls in ERROR_TYPES
                  if issubclass(cls, BaseException) and not issubclass(cls, Warning)]

    assert [] == [cls.__name__ for cls in exceptions
                  if not issubclass(cls, errors.PocoFlowError)]


def test_importing_the_core_names_loads_no_heavy_modules() -> None:
    """Importing Flow, Node and Store loads neither sqlalchemy, streamlit, anyio nor asyncio."""
    code = textwrap.dedent("""
        import sys
        from pocoflow import Flow, Node, Store
        heavy = ("sqlalchemy", "streamlit", "anyio", "asyncio")
        print(",".join(sorted(name for name in heavy if name in sys.modules)))
    """)

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)

    assert 0 == done.returncode, done.stderr
    assert "" == done.stdout.strip()


def test_package_ships_py_typed() -> None:
    """The package carries the py.typed marker so type checkers read its annotations."""
    assert (Path(pocoflow.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("name", ["hello", "demo"])
def test_examples_run_offline(tmp_path: Path, name: str) -> None:
    """examples/hello.py and the README's demo run to exit code 0 with all network
    connections refused; the demo leaves a completed, resumed run in ./pocoflow.db."""
    example = ROOT / "examples" / f"{name}.py"
    code = textwrap.dedent(f"""
        import runpy, socket, sys

        def no_network(*args, **kwargs):
            raise OSError("network access is disabled in this test")

        socket.socket.connect = no_network
        socket.socket.connect_ex = no_network
        socket.create_connection = no_network
        sys.argv = [{str(example)!r}]
        sys.path.insert(0, {str(example.parent)!r})
        runpy.run_path({str(example)!r}, run_name="__main__")
    """)

    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)

    assert 0 == done.returncode, done.stdout + done.stderr
    if name == "demo":
        runs = pocoflow.WorkflowDB(tmp_path / "pocoflow.db").list_runs()
        assert [("completed", 5)] == [(r["status"], r["total_steps"]) for r in runs]
        events = pocoflow.WorkflowDB(tmp_path / "pocoflow.db").get_events(runs[0]["run_id"])
        assert ["Plan", "Research", "Research", "Research", "Write"] == [
            e["node_name"] for e in events if e["event"] == "node_end"]


def test_pocoflow_02_module_paths_still_import() -> None:
    """Imports written for pocoflow 0.2's module layout keep working."""
    from pocoflow.flow import Flow
    from pocoflow.node import DEFAULT_ACTION, WILDCARD_ACTION, AsyncNode, Node
    from pocoflow.runner import RunHandle
    from pocoflow.store import Store

    assert (pocoflow.Flow, pocoflow.Node, pocoflow.AsyncNode, pocoflow.Store) == (
        Flow, Node, AsyncNode, Store)
    assert pocoflow.RunHandle is RunHandle
    assert ("default", "*") == (DEFAULT_ACTION, WILDCARD_ACTION)


@pytest.mark.parametrize("name", ["hello", "demo"])
def test_examples_print_usage_on_help(tmp_path: Path, name: str) -> None:
    """`python examples/X.py --help` prints usage and exits 0, creating no database."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--help"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    assert 0 == done.returncode, done.stderr
    assert "usage:" in done.stdout
    assert [] == list(tmp_path.iterdir())
