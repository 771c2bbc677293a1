"""``python -m pocoflow.ui.resume_runner MODULE:FLOW RUN_ID [--set KEY=JSON ...]``

The monitor's background resume: ``pocoflow resume`` on the database named by
``$POCOFLOW_MONITOR_DB``, which stays out of the command line (where ``ps``
would show a database password to every user of the machine).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

DB_ENV = "POCOFLOW_MONITOR_DB"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    database = os.environ.get(DB_ENV)
    if not database:
        print(f"resume_runner: set {DB_ENV} to the database (a path or URL).", file=sys.stderr)
        return 2
    if len(args) < 2:
        print(
            "usage: python -m pocoflow.ui.resume_runner MODULE:FLOW RUN_ID [--set KEY=JSON ...]",
            file=sys.stderr,
        )
        return 2
    from pocoflow.cli import main as cli

    # the run id comes from the database: after '--', one that starts with '-' is
    # still the run id, never an option
    return cli(["resume", "--db", database, *args[2:], "--", args[0], args[1]])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
