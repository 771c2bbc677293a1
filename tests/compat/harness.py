"""Running a compatibility program, the same way for recording (0.2.1) and testing.

A program runs in a fresh working directory, with none of the environment that
could change its output (LLM keys and settings, PYTHONPATH, hash seed) and
proxies pointing at a closed local port, so nothing can reach the network.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
EXPECTED = HERE / "expected"
REPO = HERE.parents[1]
EXIT_MARK = "--- exit code: "
TIMEOUT = 120

_DROPPED_PREFIXES = ("LLM_", "DD_LOG_", "POCOFLOW_")
_DROPPED = {"PYTHONPATH", "PYTHONSTARTUP", "PYTHONWARNINGS", "PYTHONHOME", "OLLAMA_HOST",
            "VIRTUAL_ENV"}


@dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    returncode: int

    def recorded(self) -> str:
        """What expected/<name>.txt holds: the stdout, then the exit code."""
        return f"{self.stdout}{EXIT_MARK}{self.returncode}\n"


def program_names() -> list[str]:
    return sorted(p.stem for p in PROGRAMS.glob("*.py"))


def clean_env(pythonpath: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)
           and not k.endswith("_API_KEY")}
    env.update({"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "TZ": "UTC",
                "PYTHONIOENCODING": "utf-8", "HTTP_PROXY": "http://127.0.0.1:9",
                "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
                "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def run_program(python: str, name: str, cwd: Path, pythonpath: str | None) -> Outcome:
    """Run programs/<name>.py with *python* in *cwd*; *pythonpath* picks the pocoflow."""
    done = subprocess.run([python, str(PROGRAMS / f"{name}.py")], cwd=cwd,
                          env=clean_env(pythonpath), capture_output=True, text=True,
                          encoding="utf-8", timeout=TIMEOUT, check=False)
    return Outcome(done.stdout, done.stderr, done.returncode)


def expected(name: str) -> str:
    return (EXPECTED / f"{name}.txt").read_text(encoding="utf-8")


def expected_stderr(name: str) -> str:
    path = EXPECTED / f"{name}.stderr.txt"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def by_design(name: str) -> str:
    """What this build prints for a program that differs from 0.2.1 on purpose."""
    return (EXPECTED / f"{name}.by-design.txt").read_text(encoding="utf-8")


def by_design_stderr(name: str) -> list[str]:
    path = EXPECTED / f"{name}.by-design.stderr.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def warning_lines(stderr: str, known: str) -> list[str]:
    """What *stderr* adds to *known* (0.2.1's stderr), in words that do not depend on
    the machine or on when the garbage collector ran: the coroutines reported never
    awaited (by name, sorted), and any other line that is not Python quoting source or
    a traceback."""
    old = set(known.splitlines())
    added = [line for line in stderr.splitlines() if line not in old]
    never_awaited = sorted({m for line in added
                            for m in re.findall(r"coroutine (?:object )?'?(\w+)", line)})
    other = [line for line in added
             if line[:1] not in (" ", "\t") and "coroutine" not in line
             and "tracemalloc" not in line and not line.startswith("Traceback")
             and not line.startswith("Exception ignored")]
    return [f"never awaited: {name}" for name in never_awaited] + other
