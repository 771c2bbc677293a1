"""Record what pocoflow 0.2.1 prints for every compatibility program.

Usage, from the repository root::

    python3 -m venv /tmp/p021venv && /tmp/p021venv/bin/pip install pocoflow==0.2.1
    python tests/compat/record_expected.py /tmp/p021venv/bin/python [program ...]

``python tests/compat/record_expected.py --by-design`` records instead what this
build prints for the programs that differ from 0.2.1 on purpose (``BY_DESIGN`` in
test_compat.py): ``<program>.by-design.txt`` and, for warnings it adds,
``<program>.by-design.stderr.txt``.

Writes ``tests/compat/expected/<program>.txt`` (stdout, then the exit code),
``<program>.stderr.txt`` when 0.2.1 wrote to stderr, and ``api-0.2.1.json``
(0.2.1's public names and signatures, from ``api_surface.py``). The interpreter
must import pocoflow 0.2.1, not this repository's pocoflow.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.compat.harness import (
    EXPECTED,
    HERE,
    clean_env,
    program_names,
    run_program,
)


def check_version(python: str) -> None:
    found = subprocess.run(  # from a temporary folder: no pocoflow/ beside it
        [python, "-c", "import importlib.metadata as m, pocoflow; "
                       "print(m.version('pocoflow'), pocoflow.__file__)"],
        cwd=tempfile.gettempdir(), env=clean_env(None), capture_output=True, text=True,
        check=True).stdout.split()
    if found[0] != "0.2.1" or str(HERE.parents[1]) in found[1]:
        sys.exit(f"{python} imports pocoflow {found[0]} from {found[1]}; it must be "
                 "pocoflow 0.2.1 from PyPI (pip install pocoflow==0.2.1 in a venv).")


def record_by_design() -> int:
    """This build's output for each program in BY_DESIGN."""
    from tests.compat.harness import REPO, expected_stderr, warning_lines
    from tests.compat.test_compat import BY_DESIGN

    for name in sorted(BY_DESIGN):
        with tempfile.TemporaryDirectory(prefix=f"compat-{name}-") as cwd:
            outcome = run_program(sys.executable, name, Path(cwd), str(REPO))
        (EXPECTED / f"{name}.by-design.txt").write_text(outcome.recorded(), encoding="utf-8")
        added = warning_lines(outcome.stderr, expected_stderr(name))
        stderr_file = EXPECTED / f"{name}.by-design.stderr.txt"
        if added:
            stderr_file.write_text("\n".join(added) + "\n", encoding="utf-8")
        else:
            stderr_file.unlink(missing_ok=True)
        print(f"{name}: exit {outcome.returncode} (this build)")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--by-design"]:
        return record_by_design()
    if not argv:
        print(__doc__)
        return 2
    python, names = argv[0], argv[1:] or program_names()
    check_version(python)
    EXPECTED.mkdir(exist_ok=True)
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"compat-{name}-") as cwd:
            outcome = run_program(python, name, Path(cwd), None)
        (EXPECTED / f"{name}.txt").write_text(outcome.recorded(), encoding="utf-8")
        stderr_file = EXPECTED / f"{name}.stderr.txt"
        if outcome.stderr:
            stderr_file.write_text(outcome.stderr, encoding="utf-8")
        else:
            stderr_file.unlink(missing_ok=True)
        print(f"{name}: exit {outcome.returncode}, {len(outcome.stdout.splitlines())} lines"
              + (", STDERR" if outcome.stderr else ""))
    with tempfile.TemporaryDirectory() as cwd:
        surface = subprocess.run([python, str(HERE / "api_surface.py")], cwd=cwd,
                                 env=clean_env(None), capture_output=True, text=True,
                                 check=True).stdout
    (EXPECTED / "api-0.2.1.json").write_text(surface, encoding="utf-8")
    print("api-0.2.1.json written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
