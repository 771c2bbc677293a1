"""The layering the design promises: the engine and its events know nothing of storage."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def modules_loaded_by(statement: str) -> set[str]:
    code = textwrap.dedent(f"""
        import sys
        {statement}
        print("\\n".join(sorted(m for m in sys.modules if m.startswith("pocoflow"))))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", ["pocoflow.engine", "pocoflow.events", "pocoflow.sinks",
                                    "pocoflow.graph", "pocoflow.bridge", "pocoflow.stream"])
def test_the_runtime_imports_nothing_from_persistence(module: str) -> None:
    """Importing the engine (or its events, sinks, graph, bridge, stream) loads no
    pocoflow.persistence module: persistence is a sink the Flow plugs in."""
    loaded = modules_loaded_by(f"import {module}")

    assert module in loaded
    assert [] == sorted(m for m in loaded if m.startswith("pocoflow.persistence"))


def test_a_flow_without_a_database_runs_without_loading_persistence() -> None:
    """A run of a flow with no database never imports pocoflow.persistence or sqlalchemy."""
    loaded = modules_loaded_by("from pocoflow import Flow, Node; Flow(Node()).run({})")

    assert [] == sorted(m for m in loaded if m.startswith("pocoflow.persistence"))
    assert "pocoflow.engine" in loaded
