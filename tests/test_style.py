"""The code base stays ruff clean (the house style is part of the contract)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_reports_nothing() -> None:
    """ruff finds no issue in the package, tests, examples and benchmarks."""
    folders = [p for p in ("pocoflow", "tests", "examples", "benchmarks") if (ROOT / p).is_dir()]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *folders],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert 0 == result.returncode, result.stdout + result.stderr
