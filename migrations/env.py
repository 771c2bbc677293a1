"""Alembic environment for PocoFlow's tables (pf_runs, pf_events, pf_checkpoints).

Run from the repository root: ``alembic upgrade head`` upgrades the database
named by ``sqlalchemy.url`` in ``alembic.ini``, or by ``-x db=PATH_OR_URL``.
PocoFlow itself passes an open connection in ``config.attributes``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from pocoflow.persistence.connect import create_db_engine, to_url, write_connection
from pocoflow.persistence.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)


def _target() -> str:
    given = context.get_x_argument(as_dictionary=True).get("db")
    return given or config.get_main_option("sqlalchemy.url") or "pocoflow.db"


def run_offline() -> None:
    url = to_url(_target())
    _configure(url=url, literal_binds=True, render_as_batch=url.get_backend_name() == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = create_db_engine(to_url(_target()))
    try:
        with write_connection(engine) as conn, conn.begin():
            _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
