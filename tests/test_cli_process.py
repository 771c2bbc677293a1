"""The ``pocoflow`` command as its own process: --version, ``python -m pocoflow``, a
reader that closes the pipe early, Ctrl-C, and the files a command leaves behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import pocoflow
from pocoflow import AsyncNode, Flow, WorkflowDB

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WAIT = 30


def pocoflow_command(*argv: Any) -> list[str]:
    return [sys.executable, "-m", "pocoflow", *(str(a) for a in argv)]


def run(*argv: Any, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pocoflow_command(*argv), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=ENV, check=False)


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    """A SQLite database with 3000 runs and 3000 events (a few hundred KB of listing)."""
    path = tmp_path / "big.db"
    WorkflowDB(path).create_run("seed", "f")
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO pf_runs (run_id, flow_name, status, started_at, completed_at, "
            "total_steps) VALUES (?, 'bulk', 'completed', ?, ?, 3)",
            [(f"run-{i:05d}", f"2026-01-01T00:00:{i % 60:02d}.{i:06d}+00:00",
              "2026-01-01T00:01:00.000000+00:00") for i in range(3000)])
        conn.executemany(
            "INSERT INTO pf_events (run_id, event, ts, step, node_name) "
            "VALUES ('seed', 'node_start', '2026-01-01T00:00:00+00:00', ?, 'N')",
            [(i,) for i in range(3000)])
    conn.close()
    return path


def no_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert "Exception ignored" not in err


# ── --version, python -m, the installed script ──────────────────────────────


def test_version() -> None:
    """`pocoflow --version` prints the version and exits 0, as `python -m pocoflow` and
    as the installed script."""
    done = run("--version")
    assert (0, f"pocoflow {pocoflow.__version__}\n", "") == (done.returncode, done.stdout,
                                                               done.stderr)
    script = shutil.which("pocoflow")
    assert script is not None
    done = subprocess.run([script, "--version"], capture_output=True, text=True, env=ENV,
                          timeout=60, check=False)
    assert (0, f"pocoflow {pocoflow.__version__}\n") == (done.returncode, done.stdout)


def test_help_lists_every_command_and_the_exit_codes() -> None:
    """`pocoflow --help` names each command and documents the exit codes."""
    done = run("--help")
    assert 0 == done.returncode
    for word in ("runs", "db", "resume", "monitor", "exit codes:", "130", "141"):
        assert word in done.stdout


def test_a_read_leaves_no_file_behind(tmp_path: Path) -> None:
    """`runs ls` in its own process leaves the folder as it found it (no -wal or -shm)."""
    path = tmp_path / "runs.db"
    WorkflowDB(path).create_run("r1", "f")
    from pocoflow.persistence.database import Database

    Database.forget(WorkflowDB(path).records.url)
    before = sorted(os.listdir(tmp_path))
    done = run("runs", "ls", path)
    assert 0 == done.returncode, done.stderr
    assert "r1" in done.stdout
    assert before == sorted(os.listdir(tmp_path))


def test_the_installed_script_never_creates_a_database(tmp_path: Path) -> None:
    """`pocoflow runs /no/such/x.db` exits 1 with one line, creating nothing."""
    done = subprocess.run([shutil.which("pocoflow") or "pocoflow", "runs",
                           str(tmp_path / "no" / "such" / "x.db")], capture_output=True,
                          text=True, env=ENV, timeout=60, check=False)
    assert (1, "") == (done.returncode, done.stdout)
    assert 1 == len(done.stderr.splitlines())
    assert "pocoflow db upgrade" in done.stderr
    assert [] == list(tmp_path.iterdir())


def test_the_wheel_lists_every_package_of_pocoflow() -> None:
    """pyproject's package list names every package under pocoflow/ (pocoflow.cli among
    them), or a wheel install would lack it and the `pocoflow` script could not import."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for init in (ROOT / "pocoflow").rglob("__init__.py")
             if "__pycache__" not in init.parts and "_migrations" not in init.parts}

    assert "pocoflow.cli" in found
    assert set() == found - listed


# ── a reader that goes away: `| head -1` ────────────────────────────────────


@pytest.mark.parametrize("words", [["runs", "ls", "{db}", "--limit", "5000"],
                                   ["runs", "ls", "{db}", "--limit", "5000", "--json"],
                                   ["runs", "tail", "{db}", "-n", "5000"]],
                         ids=" ".join)
def test_a_reader_that_closes_early_ends_the_command_quietly(big_db: Path,
                                                             words: list[str]) -> None:
    """The reader of stdout reads one line and closes the pipe: the command stops with
    exit 141 (as Unix tools killed by SIGPIPE) and prints nothing on stderr."""
    argv = [str(big_db) if w == "{db}" else w for w in words]
    child = subprocess.Popen(pocoflow_command(*argv), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    assert child.stdout is not None
    assert child.stdout.readline()
    child.stdout.close()
    _, err = child.communicate(timeout=WAIT)
    assert 141 == child.returncode, err
    assert b"" == err


def test_a_reader_gone_before_the_start(big_db: Path) -> None:
    """stdout is a pipe nobody reads any more before the command writes: exit 141,
    nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(pocoflow_command("runs", "ls", big_db), stdout=write,
                              stderr=subprocess.PIPE, cwd=ROOT, env=ENV, timeout=WAIT,
                              check=False)
    finally:
        os.close(write)
    assert (141, b"") == (done.returncode, done.stderr)


def test_head_in_a_shell_pipeline(big_db: Path) -> None:
    """`pocoflow runs ls DB | head -1` in a shell prints one line and no error."""
    command = " ".join([*pocoflow_command("runs", "ls", big_db, "--limit", "5000"),
                        "| head -1"])
    done = subprocess.run(["bash", "-c", f"{command}; echo \"${{PIPESTATUS[0]}}\" >&2"],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=WAIT,
                          check=False)
    assert 1 == len(done.stdout.splitlines())
    assert done.stdout.startswith("run_id")
    assert "141\n" == done.stderr


def test_stdout_closed_from_the_start(big_db: Path) -> None:
    """Started with stdout closed (`>&-`), a command still runs and says nothing."""
    command = " ".join(pocoflow_command("runs", "ls", big_db, "--limit", "5000"))
    done = subprocess.run(["bash", "-c", f"{command} >&-"], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=WAIT, check=False)
    assert (0, "") == (done.returncode, done.stderr)


# ── Ctrl-C ──────────────────────────────────────────────────────────────────


class Wait(AsyncNode):
    async def exec_async(self, prep_res: Any) -> None:
        await anyio.sleep(3600)


def wait_for_output(child: subprocess.Popen[bytes]) -> bytes:
    """The first line the child prints (it has started following)."""
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, child.stderr.read() if child.stderr else ""
    return line


@pytest.mark.parametrize("following", ["every run", "one running run"])
def test_ctrl_c_ends_a_tail_with_exit_0(tmp_path: Path, following: str) -> None:
    """Ctrl-C ends `runs tail` (of every run, or of one still running) with exit 0, no
    traceback, and no file left behind."""
    path = tmp_path / "runs.db"
    db = WorkflowDB(path)
    handle = Flow(start=Wait(), flow_name="wait", run_id="w1", db=db).run_background({})
    deadline = time.monotonic() + WAIT
    while (db.get_run("w1") or {}).get("status") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    before = sorted(os.listdir(tmp_path))
    argv = ["runs", "tail", path, "--interval", "0.1"]
    if following == "one running run":
        argv.append("w1")
    child = subprocess.Popen(pocoflow_command(*argv), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    try:
        assert b"w1" in wait_for_output(child)
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
        handle.cancel()
        handle.wait(timeout=WAIT)
    assert 0 == child.returncode, err
    no_traceback(err.decode())
    assert b"" == err
    assert before == sorted(os.listdir(tmp_path))


@pytest.fixture
def silent_server() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def test_ctrl_c_while_waiting_for_a_server(silent_server: int) -> None:
    """Ctrl-C while a command waits for a server that never answers: exit 130 and one
    line, no traceback."""
    url = f"postgresql+psycopg://pf:pw@127.0.0.1:{silent_server}/pocoflow"
    child = subprocess.Popen(pocoflow_command("runs", "ls", url), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    try:
        time.sleep(3)  # imported, and waiting on the socket
        assert child.poll() is None
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
    assert (130, b"", b"pocoflow: interrupted\n") == (child.returncode, out, err)
