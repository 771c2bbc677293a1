"""A fork server for the crash suite: many short child processes, cheaply.

Starting Python and importing PocoFlow, SQLAlchemy, psycopg and Alembic costs about half
a second per process; forking a process that has them imported costs a few
milliseconds. The server (``python -m tests.reliability.forkserver``) imports them
once, then forks a child per request read from its stdin (one JSON line each) and
reports on its stdout (one JSON line each) when the child started and how it ended.

A request may ask the server to SIGKILL the child after a delay (``kill_after``
seconds from the fork): the server kills it before reaping it, so the pid can never
name another process. A child writes its output to the request's ``log`` file and runs
:func:`tests.reliability.crash_child.main` with the request's ``spec``.

The server stays single-threaded, so each fork copies no lock held by another thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# ── the server (its own process) ─────────────────────────────────────────────


def _report(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any]) -> None:
    """In the forked child: run the request's spec, then exit (never returns)."""
    code = 0
    try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from tests.reliability import crash_child

        crash_child.main(request["spec"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:  # what a normal exit runs (PocoFlow closes its databases, folding the WAL in)
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    from tests.reliability import crash_child

    crash_child.preload()
    children: dict[int, tuple[str, float | None]] = {}  # pid -> (tag, kill at)
    pending = b""
    stdin = sys.stdin.fileno()
    _report({"ready": os.getpid()})
    while True:
        timeout = 0.002 if children else None
        readable, _, _ = select.select([stdin], [], [], timeout)
        if readable:
            data = os.read(stdin, 1 << 16)
            if not data:  # the test process closed the pipe: done
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                if "kill" in request:  # kill a child now, if it is still ours to kill
                    for pid, (tag, _) in children.items():
                        if tag == request["kill"]:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                    continue
                began = time.monotonic()
                pid = os.fork()
                if pid == 0:
                    _child(request)
                delay = request.get("kill_after")
                children[pid] = (request["tag"], began + delay if delay is not None else None)
                _report({"started": request["tag"], "pid": pid})
        now = time.monotonic()
        for pid, (tag, kill_at) in list(children.items()):
            if kill_at is not None and now >= kill_at:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                children[pid] = (tag, None)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            tag, _ = children.pop(pid)
            _report({"exited": tag, "pid": pid,
                     "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                     "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None})


# ── the client (in the test process) ─────────────────────────────────────────


class ForkServer:
    """The test's handle on a fork server process."""

    def __init__(self, log_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._log = log_dir / "forkserver.log"
        self._stderr = self._log.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.forkserver"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._exits: dict[str, dict[str, Any]] = {}
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._tags = 0
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        ready = self._messages.get(timeout=120)
        assert ready is not None, self._log.read_text()
        assert "ready" in ready, self._log.read_text()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._lock:
                if "started" in message:
                    self._pids[message["started"]] = message["pid"]
                elif "exited" in message:
                    self._exits[message["exited"]] = message
                    continue
            self._messages.put(message)
        self._messages.put(None)

    def spawn(self, spec: dict[str, Any], log: Path, kill_after: float | None = None) -> str:
        """Fork a child running *spec*; return its tag."""
        with self._lock:
            self._tags += 1
            tag = f"c{self._tags}"
        self._send({"tag": tag, "spec": spec, "log": str(log), "kill_after": kill_after})
        return tag

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        with self._write_lock:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()

    def pid(self, tag: str, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if tag in self._pids:
                    return self._pids[tag]
            assert time.monotonic() < deadline, f"the fork server never started {tag}"
            assert self._proc.poll() is None, self._log.read_text()
            time.sleep(0.001)

    def poll(self, tag: str) -> dict[str, Any] | None:
        """How child *tag* ended (``signal``, ``code``), or None while it runs."""
        with self._lock:
            return self._exits.get(tag)

    def wait(self, tag: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ended = self.poll(tag)
            if ended is not None:
                return ended
            assert self._proc.poll() is None, self._log.read_text()
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {tag} still runs after {timeout} s")
            time.sleep(0.001)

    def kill(self, tag: str) -> None:
        """SIGKILL child *tag* if it still runs (the server kills it: it has not reaped
        it, so the pid cannot name another process)."""
        self._send({"kill": tag})

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


if __name__ == "__main__":
    serve()
