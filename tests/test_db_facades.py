"""WorkflowDB and AsyncWorkflowDB cannot drift: both are generated from RunRecords."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pocoflow import AsyncWorkflowDB, WorkflowDB
from pocoflow.persistence import facades
from pocoflow.persistence.records import API, RunRecords


def public_methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items()
            if callable(value) and not name.startswith("_")}


@pytest.mark.parametrize("facade", [WorkflowDB, AsyncWorkflowDB])
@pytest.mark.parametrize("name", API)
def test_each_api_method_has_the_implementations_signature(facade: type, name: str) -> None:
    """Every method of the database API exists on both facades with exactly the signature
    (parameters, defaults, annotations) of RunRecords; the async one is a coroutine."""
    implementation = inspect.signature(getattr(RunRecords, name))
    method = getattr(facade, name)

    assert implementation == inspect.signature(method)
    assert (facade is AsyncWorkflowDB) == inspect.iscoroutinefunction(method)


def test_the_facades_offer_the_same_methods() -> None:
    """Both facades have the same public methods (the API, plus open on the async one and
    watch on both)."""
    expected = {*API, "open", "watch"}

    assert expected == public_methods(AsyncWorkflowDB)
    assert expected - {"open"} == public_methods(WorkflowDB)


def test_the_generated_methods_are_up_to_date() -> None:
    """pocoflow/db.py holds exactly what `python -m pocoflow.persistence.facades` writes."""
    source = Path(facades.TARGET).read_text(encoding="utf-8")

    assert facades.render(source) == source


def test_both_facades_take_db_path_by_keyword_as_in_02(tmp_path: Path) -> None:
    """WorkflowDB(db_path=...) works as in pocoflow 0.2, and the parameter takes a URL
    too; AsyncWorkflowDB names it the same."""
    import anyio

    db = WorkflowDB(db_path=tmp_path / "kw.db")
    db.create_run("r1", "kw")
    by_url = WorkflowDB(db_path=f"sqlite:///{tmp_path / 'kw.db'}")
    assert "kw" == by_url.get_run("r1")["flow_name"]  # type: ignore[index]

    async def read() -> dict[str, object] | None:
        return await AsyncWorkflowDB(db_path=tmp_path / "kw.db").get_run("r1")

    assert "kw" == anyio.run(read)["flow_name"]  # type: ignore[index]


def test_db_path_is_the_path_as_given_as_in_02(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """WorkflowDB.db_path is a Path of what was given (relative stays relative, as in 0.2);
    for a sqlite URL it is the file the URL names; the async facade says the same."""
    monkeypatch.chdir(tmp_path)
    relative = WorkflowDB("state/runs.db")
    as_path = WorkflowDB(Path("state") / "runs.db")
    by_url = WorkflowDB(f"sqlite:///{tmp_path / 'state' / 'runs.db'}")

    assert Path("state/runs.db") == relative.db_path
    assert Path("state/runs.db") == as_path.db_path
    assert tmp_path / "state" / "runs.db" == by_url.db_path
    assert Path("state/runs.db") == AsyncWorkflowDB("state/runs.db").db_path
    assert (tmp_path / "state" / "runs.db").exists()


def test_last_action_works_on_both_facades(tmp_path: Path) -> None:
    """last_action (broken in the hand-written WorkflowDB) answers on both facades."""
    import anyio

    from pocoflow import Flow, Node

    class Go(Node):
        def post(self, store: object, prep_res: object, exec_res: object) -> str:
            return "went"

    db = WorkflowDB(tmp_path / "facades.db")
    handle = Flow(start=Go(), db=db).run_background({})
    handle.wait(10)

    assert "went" == db.last_action(handle.run_id)
    assert "went" == anyio.run(db.aio.last_action, handle.run_id)
