"""Every public name and module path of pocoflow 0.2.1 is importable from this build,
with call signatures a 0.2 caller can still use.

``expected/api-0.2.1.json`` was written by ``api_surface.py`` under pocoflow 0.2.1
(see ``record_expected.py``); the same script describes this build in a subprocess.
A signature is compatible when every 0.2.1 parameter is still there, in the same
place, of the same kind and with the same default, and every new parameter is
keyword-only with a default (or ``*args``/``**kwargs``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.compat.harness import EXPECTED, HERE, REPO, clean_env

OLD = json.loads((EXPECTED / "api-0.2.1.json").read_text(encoding="utf-8"))

#: Differences kept by design (docs/migrating-from-0.2.md), with exactly the problems
#: each one shows: anything more, or less, fails the test.
_RUNHANDLE_INIT = [
    "__init__: parameter 'run_id' is gone", "__init__: parameter 'thread' is gone",
    "__init__: parameter 'done_event' is gone", "__init__: parameter 'result_box' is gone",
    "__init__: parameter 'cancel_event' is gone", "__init__: parameter 'db' is gone",
    "__init__: new parameter 'control' is required",
    "__init__: new parameter 'future' is required",
]
BY_DESIGN: dict[str, list[str]] = {
    # STATUS_EMOJI gained the cancelled and interrupted badges; 0.2.1's five are unchanged
    "pocoflow.ui.monitor.STATUS_EMOJI": [
        "value {'kind': 'value', 'value': {'completed': '✅', 'failed': '❌', 'paused': "
        "'⏸️', 'queued': '⏳', 'running': '🔄'}} became {'kind': 'value', 'value': "
        "{'cancelled': '🚫', 'completed': '✅', 'failed': '❌', 'interrupted': '⚠️', "
        "'paused': '⏸️', 'queued': '⏳', 'running': '🔄'}}"],
    # RunHandle(run_id, thread, done_event, result_box, cancel_event, db=None) became
    # RunHandle(control, future); 0.2 documented it as 'do not instantiate directly'
    # (run_background makes one), and its attributes and methods are all kept
    "pocoflow.RunHandle": _RUNHANDLE_INIT,
    "pocoflow.runner.RunHandle": _RUNHANDLE_INIT,
}
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")


@pytest.fixture(scope="module")
def new_surface(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("api")
    done = subprocess.run([sys.executable, str(HERE / "api_surface.py"),
                           str(EXPECTED / "api-0.2.1.json")], cwd=cwd,
                          env=clean_env(str(REPO)), capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


def signature_problems(old: list[list[Any]] | None, new: list[list[Any]] | None) -> list[str]:
    """Why a call written for the *old* parameters could fail against the *new* ones."""
    if old is None:
        return []
    if new is None:
        return ["no signature any more"]
    problems = []
    new_by_name = {p[0]: p for p in new}
    kinds = {p[1] for p in new}
    for index, (name, kind, default) in enumerate(old):
        if kind == "VAR_POSITIONAL" or kind == "VAR_KEYWORD":
            if kind not in kinds:
                problems.append(f"*{name} is gone" if kind == "VAR_POSITIONAL"
                                else f"**{name} is gone")
            continue
        found = new_by_name.get(name)
        if found is None:
            problems.append(f"parameter {name!r} is gone")
            continue
        if kind in POSITIONAL and (index >= len(new) or new[index][0] != name
                                   or new[index][1] not in POSITIONAL):
            problems.append(f"parameter {name!r} is no longer positional number {index}")
        if kind == "KEYWORD_ONLY" and found[1] not in ("KEYWORD_ONLY", "POSITIONAL_OR_KEYWORD"):
            problems.append(f"parameter {name!r} can no longer be passed by keyword")
        if default is not None and found[2] != default:
            problems.append(f"parameter {name!r} defaults to {found[2]} instead of {default}")
    old_names = {p[0] for p in old}
    for name, kind, default in new:
        if name in old_names or kind in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            continue
        if default is None:
            problems.append(f"new parameter {name!r} is required")
        elif kind != "KEYWORD_ONLY":
            problems.append(f"new parameter {name!r} is not keyword-only")
    return problems


def entry_problems(old: dict[str, Any], new: dict[str, Any] | None) -> list[str]:
    if new is None:
        return ["missing"]
    if old["kind"] != new["kind"]:
        return [f"was a {old['kind']}, is a {new['kind']}"]
    if old["kind"] == "function":
        return signature_problems(old["params"], new["params"])
    if old["kind"] == "value":
        return [] if old == new else [f"value {old} became {new}"]
    problems = []
    for method, spec in old["methods"].items():
        found = new["methods"].get(method)
        if found is None:
            problems.append(f"method {method} is gone")
        elif spec["kind"] == "property":
            if found["kind"] != "property":
                problems.append(f"{method} is no longer a property")
        else:
            problems += [f"{method}: {p}" for p in
                         signature_problems(spec["params"], found.get("params"))]
    if old["fields"] and (new["fields"] or [])[: len(old["fields"])] != old["fields"]:
        problems.append(f"dataclass fields {old['fields']} became {new['fields']}")
    return problems


def _cases() -> list[Any]:
    cases = []
    for module, names in OLD.items():
        ids = [module] + [f"{module}.{name}" for name in names]
        for case in ids:
            cases.append(pytest.param(case, id=case))
    return cases


@pytest.mark.parametrize("case", _cases())
def test_021_name_is_still_there_with_a_compatible_signature(
        case: str, new_surface: dict[str, Any]) -> None:
    """A 0.2.1 module path imports, and each 0.2.1 name in it can be called as before
    (but for the differences kept by design, which must show exactly as listed)."""
    module = next(m for m in sorted(OLD, key=len, reverse=True)
                  if case == m or case.startswith(m + "."))
    new_module = new_surface.get(module, {})
    assert "error" not in new_module, new_module.get("error")
    if case == module:
        return
    name = case[len(module) + 1:]
    assert BY_DESIGN.get(case, []) == entry_problems(OLD[module][name], new_module.get(name))


def test_pocketflow_is_no_longer_a_dependency_and_the_guide_says_so() -> None:
    """By design: 0.2.1 depended on pocketflow (to ease migration); this build implements
    what PocketFlow users rely on itself and does not install it, and the migration
    guide tells a project that imports pocketflow to list it in its own dependencies."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    guide = (REPO / "docs" / "migrating-from-0.2.md").read_text(encoding="utf-8")

    assert "pocketflow" not in dependencies
    assert "`pocketflow` is no longer installed with pocoflow" in guide
