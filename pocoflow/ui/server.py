"""Start the monitor as a web server: what ``pocoflow monitor DB`` runs.

:func:`serve_monitor` runs ``streamlit run pocoflow/ui/monitor.py`` in a child
process until interrupted; :func:`start_monitor` starts it and returns at once
(tests, or a program that serves the monitor beside its own work). The
database and the flow reference reach the monitor through its environment, not
its command line, so a database password never shows in ``ps``. The server
listens on 127.0.0.1 unless told otherwise: the monitor can cancel and resume
runs, so whoever reaches it can too.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from pocoflow.logging import get_logger
from pocoflow.ui.monitor import DB_ENV, FLOW_ENV, TITLE_ENV, _check_flow_ref

__all__ = ["free_port", "monitor_command", "serve_monitor", "start_monitor"]

MONITOR_SCRIPT = Path(__file__).with_name("monitor.py")
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"

_log = get_logger("monitor")


def monitor_command(*, port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line of the monitor (headless, no usage statistics,
    no file watcher)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(MONITOR_SCRIPT),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on *host* right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_monitor(
    db: str | os.PathLike[str],
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    flow: str | None = None,
    title: str | None = None,
    wait: float | None = 30.0,
    log: IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the monitor of *db* as a Streamlit server in a child process; return it.

    *db* is a SQLite file path or a SQLAlchemy URL. The server listens on *host*
    (default ``127.0.0.1``: this machine only) and *port* (``0``: a free one; read
    it back from ``process.args``). *flow* (``"module:attr"``, importable from the
    current directory) lets the monitor resume stopped runs in the background;
    *title* heads the page. With *wait* (seconds), return only once the server
    answers ``/_stcore/health``: a RuntimeError (with the server's output, when
    *log* is None) if it exits or stays silent that long. *log*: a file the
    server's output goes to (default: this process's stdout and stderr).
    Stop it with ``process.terminate()``.
    """
    port, host, target = _checked(db, port, host, flow)
    env = {**os.environ, DB_ENV: target, FLOW_ENV: flow or "", TITLE_ENV: title or ""}
    if not _is_loopback(host):
        _log.warning(
            "The monitor listens on %s: anyone who reaches it can see, cancel and "
            "resume runs. Put it behind authentication.",
            host,
        )
    process = subprocess.Popen(
        monitor_command(port=port, host=host),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    if wait is not None:
        try:
            wait_until_ready(host, port, process, wait)
        except BaseException:
            process.terminate()
            process.wait(10)
            raise
    return process


def serve_monitor(
    db: str | os.PathLike[str],
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    flow: str | None = None,
    title: str | None = None,
) -> int:
    """Serve the monitor of *db* until Ctrl-C (what ``pocoflow monitor DB [--port P]
    [--host H] [--flow module:attr]`` runs); the server's exit code (0 after Ctrl-C).

    Prints the URL once the server answers. Arguments as in :func:`start_monitor`;
    errors (no streamlit, a bad port or flow reference) are ValueError or
    ModuleNotFoundError with a message that says what to do.
    """
    # the server's own lines go to stderr: stdout carries only the URL line, and a
    # reader that goes away ('| head -1') cannot break the server's stop handler
    process = start_monitor(
        db, port=port, host=host, flow=flow, title=title, wait=None, log=sys.stderr
    )
    # SIGTERM (kill, a service manager) stops it as Ctrl-C does: its server goes too,
    # rather than living on, orphaned, still serving the database
    previous = _on_sigterm_interrupt()
    try:
        wait_until_ready(host, port, process, 60.0)
        shown = f"[{host}]" if ":" in host else host
        print(f"PocoFlow monitor: http://{shown}:{port}  (Ctrl-C to stop)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_server(process)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_server(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop the server: SIGTERM, then SIGKILL after *grace* seconds (a server whose stop
    handler fails would live on). Further Ctrl-C or SIGTERM wait meanwhile: stopping
    this process halfway would leave the server orphaned, still serving the database."""
    if process.poll() is not None:
        return
    held = threading.current_thread() is threading.main_thread()
    if held:
        before = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
    try:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    finally:
        if held:
            for sig, handler in before.items():
                signal.signal(sig, handler)


def _on_sigterm_interrupt() -> Any:
    """Make SIGTERM raise KeyboardInterrupt in this (main) thread; the handler it
    replaced, to put back (None: not the main thread, nothing changed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def wait_until_ready(
    host: str, port: int, process: subprocess.Popen[bytes], timeout: float
) -> None:
    """Poll the server's ``/_stcore/health`` until it answers ``ok``."""
    probe = (
        "127.0.0.1"
        if host in ("0.0.0.0", "")
        else "[::1]"
        if host == "::"
        else f"[{host}]"
        if ":" in host
        else host
    )
    url = f"http://{probe}:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"The monitor's server exited with code {process.returncode} "
                f"before answering on port {port} (is the port taken? see "
                "its output above)."
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"The monitor's server did not answer {url} within {timeout:.0f} s.")


def _checked(db: Any, port: Any, host: Any, flow: str | None) -> tuple[int, str, str]:
    if importlib.util.find_spec("streamlit") is None:
        raise ModuleNotFoundError(
            'The monitor needs streamlit. Install it with: pip install "pocoflow[ui]"'
        )
    if not isinstance(db, (str, os.PathLike)) or not os.fspath(db):
        raise TypeError(f"The monitor's database is a file path or a SQLAlchemy URL, got {db!r}.")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 1 to 65535 (0: any free port), got {port!r}.")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be an address such as '127.0.0.1', got {host!r}.")
    if flow is not None:
        _check_flow_ref(flow)
    text = os.fspath(db)
    target = text if "://" in text else str(Path(text).expanduser().absolute())
    return port or free_port(host), host, target


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
