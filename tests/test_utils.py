"""pocoflow.utils, pocoflow 0.2's module path: its re-exports, the lazy visualizer names,
the .env loading it kept, and what `import pocoflow` no longer pulls in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import pocoflow.llm
import pocoflow.utils
from tests.llm_fakes import clean_llm_environment  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path, **env: str) -> str:
    """Run ``code`` in a fresh interpreter on this checkout; return its stdout."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "OLLAMA_"))}
    environment.update(PYTHONPATH=str(ROOT), **env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=60, check=False)
    assert 0 == done.returncode, done.stderr
    return done.stdout.strip()


def test_the_llm_names_are_those_of_pocoflow_llm() -> None:
    """pocoflow.utils exports 0.2's LLM names (and acall_llm), the very objects of pocoflow.llm."""
    for name in ("LLMResponse", "UniversalLLMProvider", "call_llm", "get_llm_stats", "acall_llm"):
        assert getattr(pocoflow.llm, name) is getattr(pocoflow.utils, name)
    assert sorted(pocoflow.utils.__all__) == pocoflow.utils.__all__


def test_the_visualizer_names_come_from_pocoflow_visualize(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FlowVisualizer and visualize_flow are read from pocoflow.visualize on access."""
    visualize = ModuleType("pocoflow.visualize")
    visualize.FlowVisualizer = type("FlowVisualizer", (), {})
    visualize.visualize_flow = lambda flow, **options: "flowchart TD"
    monkeypatch.setitem(sys.modules, "pocoflow.visualize", visualize)

    from pocoflow.utils import FlowVisualizer, visualize_flow

    assert (visualize.FlowVisualizer, visualize.visualize_flow) == (FlowVisualizer,
                                                                    visualize_flow)
    assert {"FlowVisualizer", "visualize_flow"} <= set(dir(pocoflow.utils))


def test_without_pocoflow_visualize_the_names_raise_attribute_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """If pocoflow.visualize cannot be imported, accessing its names says so (and the
    LLM names keep working)."""
    monkeypatch.setitem(sys.modules, "pocoflow.visualize", None)

    with pytest.raises(AttributeError, match=r"comes from pocoflow\.visualize"):
        pocoflow.utils.FlowVisualizer  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        pocoflow.utils.nothing  # noqa: B018


def test_importing_pocoflow_loads_no_llm_code_sdk_or_env_file(tmp_path: Path) -> None:
    """`import pocoflow` imports neither pocoflow.llm, pocoflow.utils, dotenv nor an SDK,
    and reads no .env; `import pocoflow.llm` adds no anyio, SDK or dotenv either."""
    (tmp_path / ".env").write_text("FROM_ENV=loaded\n")
    code = """
        import os, sys
        watched = ("pocoflow.llm", "pocoflow.utils", "dotenv", "anyio", "openai", "anthropic")
        def report():
            print(sorted(m for m in watched if m in sys.modules), os.environ.get("FROM_ENV"))
        import pocoflow
        report()
        import pocoflow.llm
        report()
    """

    lines = run_python(code, tmp_path).splitlines()

    assert ["[] None", "['pocoflow.llm'] None"] == lines


def test_importing_pocoflow_utils_loads_the_env_file_as_02_did(tmp_path: Path) -> None:
    """`import pocoflow.utils` loads the nearest .env from the working directory up;
    variables already set keep their value."""
    (tmp_path / ".env").write_text("POCOFLOW_TEST_A=from-file\nPOCOFLOW_TEST_B=from-file\n")
    work = tmp_path / "project" / "src"
    work.mkdir(parents=True)
    code = """
        import os
        import pocoflow.utils
        print(os.environ["POCOFLOW_TEST_A"], os.environ["POCOFLOW_TEST_B"])
    """

    assert "from-file already-set" == run_python(code, work, POCOFLOW_TEST_B="already-set")


def test_the_first_provider_loads_the_env_file(tmp_path: Path) -> None:
    """Through pocoflow.llm, the .env file is read when the first provider is built, so
    its keys configure that provider."""
    (tmp_path / ".env").write_text("LLM_PROVIDER=anthropic\nLLM_MAX_RETRIES=7\n")
    code = """
        import os
        from pocoflow.llm import UniversalLLMProvider
        before = os.environ.get("LLM_PROVIDER")
        provider = UniversalLLMProvider()
        print(before, provider.primary_provider, provider.max_retries)
    """

    assert "None anthropic 7" == run_python(code, tmp_path)


def test_the_visualizer_names_are_those_of_pocoflow_visualize() -> None:
    """With pocoflow.visualize present, pocoflow.utils hands out its very objects, and a
    star import of pocoflow.utils gets every name of its __all__."""
    from pocoflow import visualize

    namespace: dict[str, object] = {}
    exec("from pocoflow.utils import *", namespace)

    assert (visualize.FlowVisualizer, visualize.visualize_flow) == (
        pocoflow.utils.FlowVisualizer, pocoflow.utils.visualize_flow)
    assert set(pocoflow.utils.__all__) <= set(namespace)
