"""The tables, as SQLAlchemy 2 ORM models: pocoflow 0.2's columns plus the new ones.

Timestamps stay ISO-8601 UTC text, as 0.2 wrote them, so a 0.2 database and
a new one hold the same kind of value and sort the same way. The Alembic
revisions in ``migrations/`` build exactly these tables; a test runs Alembic's
autogenerate against them to prove there is no drift.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pocoflow.events import RUN_STATUSES

STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s}'" for s in RUN_STATUSES))
QUEUED = "status = 'queued'"
IN_FLIGHT = "status IN ('queued', 'running')"


class Base(DeclarativeBase):
    metadata = MetaData()


class RunRow(Base):
    """One execution of a flow (``pf_runs``)."""

    __tablename__ = "pf_runs"

    run_id: Mapped[str] = mapped_column(Text, primary_key=True)
    flow_name: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[str] = mapped_column(Text, server_default="running")
    started_at: Mapped[str] = mapped_column(Text)
    completed_at: Mapped[str | None] = mapped_column(Text)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    current_node: Mapped[str | None] = mapped_column(Text)
    error_msg: Mapped[str | None] = mapped_column(Text)
    # revision 2
    next_node: Mapped[str | None] = mapped_column(Text)  # node id a resume starts at
    parent_run_id: Mapped[str | None] = mapped_column(Text)  # nested flow or fork
    owner: Mapped[str | None] = mapped_column(Text)  # host:pid:token of the running process
    heartbeat_at: Mapped[str | None] = mapped_column(Text)
    # revision 3
    cancel_requested_at: Mapped[str | None] = mapped_column(Text)  # another process asked
    # revision 4: queued runs, human answers across processes, forks
    queue: Mapped[str | None] = mapped_column(Text)  # None: not run by workers
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    dedup_key: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # workers that took it
    resume_updates: Mapped[str | None] = mapped_column(Text)  # JSON for the next worker
    forked_from: Mapped[str | None] = mapped_column(Text)
    forked_at_step: Mapped[int | None] = mapped_column(Integer)
    # revision 5: when a worker last took the run up (queue rate limits count these)
    claimed_at: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(STATUS_CHECK, name="pf_runs_status_check"),
        # each listing of runs, newest first, reads an index in its own order (revision 3)
        Index("ix_pf_runs_listing", "started_at", "run_id"),
        Index("ix_pf_runs_parent_listing", "parent_run_id", "started_at", "run_id"),
        Index("ix_pf_runs_status_listing", "status", "parent_run_id", "started_at", "run_id"),
        Index("ix_pf_runs_flow_listing", "flow_name", "parent_run_id", "started_at", "run_id"),
        Index("ix_pf_runs_status_all", "status", "started_at", "run_id"),
        Index("ix_pf_runs_flow_all", "flow_name", "started_at", "run_id"),
        # counts per status read from an index alone (revision 3)
        Index("ix_pf_runs_parent_status", "parent_run_id", "status"),
        Index("ix_pf_runs_flow_status", "flow_name", "parent_run_id", "status"),
        # a dedup_key is unique among runs in flight (revision 4)
        Index(
            "ix_pf_runs_dedup",
            "dedup_key",
            unique=True,
            sqlite_where=text(IN_FLIGHT),
            postgresql_where=text(IN_FLIGHT),
        ),
        Index("ix_pf_runs_queue_claimed", "queue", "claimed_at"),  # (revision 5)
    )


class RunInputRow(Base):
    """What a run started from (``pf_run_inputs``): written once, kept out of ``pf_runs``,
    whose row every step rewrites."""

    __tablename__ = "pf_run_inputs"

    run_id: Mapped[str] = mapped_column(Text, ForeignKey("pf_runs.run_id"), primary_key=True)
    graph_json: Mapped[str | None] = mapped_column(Text)  # nodes and edges, for the monitor
    input_json: Mapped[str | None] = mapped_column(Text)  # the store the run started with


class CheckpointRow(Base):
    """The store after a step (``pf_checkpoints``): a full snapshot or a delta."""

    __tablename__ = "pf_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(Text, ForeignKey("pf_runs.run_id"))
    step: Mapped[int] = mapped_column(Integer)
    node_name: Mapped[str] = mapped_column(Text)
    store_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(Text)
    # revision 2
    kind: Mapped[str] = mapped_column(Text, server_default="full")  # 'full' or 'delta'
    next_node: Mapped[str | None] = mapped_column(Text)
    excluded: Mapped[str | None] = mapped_column(Text)  # JSON list of transient keys

    __table_args__ = (UniqueConstraint("run_id", "step"),)


class EventRow(Base):
    """One entry of a run's event log (``pf_events``)."""

    __tablename__ = "pf_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(Text, ForeignKey("pf_runs.run_id"))
    step: Mapped[int | None] = mapped_column(Integer)
    node_name: Mapped[str | None] = mapped_column(Text)
    event: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(Text)
    # REAL on SQLite as in 0.2; double precision elsewhere (PostgreSQL's REAL is 4 bytes)
    elapsed_ms: Mapped[float | None] = mapped_column(Float().with_variant(REAL(), "sqlite"))
    error_msg: Mapped[str | None] = mapped_column(Text)
    ts: Mapped[str] = mapped_column(Text)
    # revision 2
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: pause data, retry attempt

    __table_args__ = (Index("ix_pf_events_run_id_id", "run_id", "id"),)


runs = RunRow.__table__
# workers claim queued runs by priority (highest first), then age (revision 4)
Index(
    "ix_pf_runs_queued",
    runs.c.queue,
    runs.c.priority.desc(),
    runs.c.started_at,
    sqlite_where=text(QUEUED),
    postgresql_where=text(QUEUED),
)
run_inputs = RunInputRow.__table__
checkpoints = CheckpointRow.__table__
events = EventRow.__table__
