"""``pocoflow db upgrade|current``: the database's schema revision."""

from __future__ import annotations

import argparse
from typing import Any

from pocoflow.cli.base import OK, emit_json
from pocoflow.cli.databases import Context, check_file


def add_parser(commands: Any) -> None:
    db = commands.add_parser(
        "db",
        help="database schema: upgrade, current",
        description="The database's schema (Alembic revisions).",
    )
    verbs = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = verbs.add_parser(
        "upgrade",
        help="bring DB to this PocoFlow's schema (creating it if new)",
        description="Bring DB to this PocoFlow's schema: a new SQLite file (and its folder) "
        "is created, a pocoflow 0.2 file or an older revision is upgraded, a "
        "database newer than this PocoFlow is refused untouched.",
    )
    upgrade.add_argument("database", metavar="DB", help="SQLite file path or SQLAlchemy URL")
    upgrade.add_argument("--json", action="store_true", help="one JSON document")
    upgrade.set_defaults(func=upgrade_db)
    current = verbs.add_parser("current", help="print DB's schema revision (changes nothing)")
    current.add_argument(
        "database", metavar="DB", help="SQLite file path or SQLAlchemy URL (never created)"
    )
    current.add_argument("--json", action="store_true", help="one JSON document")
    current.set_defaults(func=current_db)


def upgrade_db(args: argparse.Namespace, ctx: Context) -> int:
    from pocoflow.db import upgrade_schema

    check_file(ctx.target_of(args.database), must_exist=False, command="pocoflow db upgrade")
    status = upgrade_schema(args.database)
    created = status["exists"] is None
    if args.json:
        emit_json(
            {
                "database": status["url"],
                "file": status["file"],
                "created": created,
                "before": status["before"],
                "after": status["after"],
                "head": status["head"],
            }
        )
        return OK
    if created:
        print(f"pocoflow: creating new database {status['file']}")
    if status["before"] == status["after"]:
        print(f"{status['url']}: already at revision {status['after']} (head)")
    else:
        print(
            f"{status['url']}: upgraded from {status['before'] or '(empty)'} to "
            f"{status['after']} (head)"
        )
    return OK


def current_db(args: argparse.Namespace, ctx: Context) -> int:
    from pocoflow.db import schema_revision

    check_file(ctx.target_of(args.database), must_exist=False, command="pocoflow db current")
    status = schema_revision(args.database)
    if args.json:
        emit_json(
            {
                "database": status["url"],
                "file": status["file"],
                "exists": status["exists"] is not None,
                "revision": status["before"],
                "head": status["head"],
            }
        )
    elif status["exists"] is None:
        print(
            f"{status['url']}: revision (none): no such file yet; this PocoFlow's head is "
            f"{status['head']}"
        )
    else:
        print(
            f"{status['url']}: revision {status['before'] or '(none)'}; this PocoFlow's "
            f"head is {status['head']}"
        )
    return OK
