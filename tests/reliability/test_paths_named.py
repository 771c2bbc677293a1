"""A database path that cannot be a database file is refused by name: an empty path, a
directory, a path through a file. (Each used to surface as the working directory's name
or as mkdir's bare "File exists".)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pocoflow import DatabaseFileError, Flow, Node, WorkflowDB


@pytest.mark.parametrize("path", ["", "   ", Path("")])
def test_an_empty_path_is_refused_naming_the_fix(path: str | Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """WorkflowDB("") (or blanks) is a ValueError saying the path is empty and how to give
    one; nothing is created in the working directory."""
    monkeypatch.chdir(tmp_path)
    if isinstance(path, Path):  # Path("") is ".": the working directory itself
        with pytest.raises(DatabaseFileError, match="is a directory, not a database file"):
            WorkflowDB(path)
    else:
        with pytest.raises(ValueError, match="is empty; give db_path a file name"):
            WorkflowDB(path)
    assert [] == os.listdir(tmp_path)


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    """A directory given as the database is a DatabaseFileError (an OSError) that says it
    is a directory and names a file inside it to use instead."""
    folder = tmp_path / "runs"
    folder.mkdir()
    with pytest.raises(DatabaseFileError) as caught:
        Flow(Node(), db_path=folder).run({})

    assert f"{folder} is a directory, not a database file" in str(caught.value)
    assert str(folder / "pocoflow.db") in str(caught.value)
    assert [] == os.listdir(folder)


@pytest.mark.parametrize("form", ["path", "url"])
def test_a_path_through_a_file_names_the_database_file(tmp_path: Path, form: str) -> None:
    """A database path whose folder is a file (notes.txt/runs.db) is a DatabaseFileError
    naming the database file, the part in the way and the fix; the file is unchanged."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    target = notes / "sub" / "runs.db"
    with pytest.raises(DatabaseFileError) as caught:
        WorkflowDB(target if form == "path" else f"sqlite:///{target}")

    message = str(caught.value)
    assert f"Cannot create the folder of the database file {target}" in message
    assert str(notes) in message
    assert "create them first" in message
    assert str(target) == caught.value.filename
    assert "keep me" == notes.read_text()
