"""Flow: a graph of nodes plus its configuration and hooks. Thin public methods.

A Flow holds no run state: ``run``, ``run_async``, ``run_background`` and
``stream`` each start a fresh run in the engine, so one Flow object may run
many times at once, in threads or tasks. It only remembers, for scripts, the id
of the last run it started (:attr:`Flow.last_run_id`), which nothing reads back.
A Flow is also a node: put it in another flow and the outer flow routes on the
inner flow's last action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pocoflow.node import Wired
from pocoflow.store import Store

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from pocoflow.bridge import RunHandle
    from pocoflow.db import AsyncWorkflowDB
    from pocoflow.graph import Start
    from pocoflow.sinks import SinkLike, UserSink
    from pocoflow.stream import EventStream

HOOK_EVENTS = ("node_start", "node_end", "node_error", "flow_end")
UNMATCHED_MODES = ("end", "warn", "raise")

StoreLike = Store | dict[str, Any] | None


class Flow(Wired):
    """Run a directed graph of nodes against a shared Store.

    ``checkpoint_dir`` writes ``step_<NNN>_<Node>.json`` after each node;
    ``max_steps`` stops runaway loops; ``run_id`` fixes the id of every run
    (default: a new ``<flow_name>-<36 chars>`` per run; see :attr:`run_id`);
    ``flow_name`` labels the runs
    (default: the start node's class name). One of ``db_path`` (a SQLite
    file), ``db_url`` (a SQLAlchemy URL) or ``db`` (a WorkflowDB or
    AsyncWorkflowDB) records every run: events, checkpoints, status.
    ``sinks`` subscribe to every event of every run (see :meth:`add_sink`).
    ``on_unmatched`` says what a node returning an action with no edge does:
    ``"end"`` the flow quietly (pocoflow 0.2; the run's end event records
    the action), ``"warn"`` (an ``UnmatchedActionWarning``) or ``"raise"``
    (``UnmatchedActionError``, the node fails).
    """

    def __init__(
        self,
        start: Wired,
        checkpoint_dir: str | Path | None = None,
        max_steps: int = 100,
        db_path: str | Path | None = None,
        run_id: str | None = None,
        flow_name: str | None = None,
        *,
        db_url: str | None = None,
        db: Any = None,
        sinks: Iterable[SinkLike] = (),
        on_unmatched: str = "end",
    ) -> None:
        if not isinstance(start, Wired):
            raise TypeError(
                f"Flow(start=...) needs a Node, AsyncNode, batch node or Flow instance, got "
                f"{type(start).__name__}. Did you pass the class instead of an instance? "
                "Use Flow(start=MyNode())."
            )
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f"Flow max_steps must be an int >= 1, got {max_steps!r}.")
        if on_unmatched not in UNMATCHED_MODES:
            raise ValueError(
                f"Flow on_unmatched must be one of {list(UNMATCHED_MODES)}, got {on_unmatched!r}."
            )
        from pathlib import Path  # imported on use: keeps `import pocoflow` light

        self.start = start
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.max_steps = max_steps
        self.db_path = Path(db_path) if db_path is not None else None
        self._recorder: Any = None
        self.db = _database(db_path, db_url, db)
        self._fixed_run_id = checked_run_id(run_id, f"Flow '{flow_name or type(start).__name__}'")
        self._last_run_id: str | None = None
        self._last_background_run_id: str | None = None
        self.flow_name = flow_name or type(start).__name__
        self.on_unmatched = on_unmatched
        self._hooks: dict[str, list[Callable[..., Any]]] = {e: [] for e in HOOK_EVENTS}
        self._sinks: list[UserSink] = []
        for sink in sinks:
            self.add_sink(sink)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    @property
    def db(self) -> AsyncWorkflowDB | None:
        """The database that records this flow's runs (None: not recorded)."""
        return self._db

    @db.setter
    def db(self, value: Any) -> None:
        if value is None:
            self._db, self._recorder = None, None
            return
        from pocoflow.db import as_async_db
        from pocoflow.persistence.recorder import Recorder

        self._db = as_async_db(value)
        self._recorder = Recorder(self._db.records)

    @property
    def run_id(self) -> str | None:
        """The fixed run id given as ``Flow(run_id=...)`` (or assigned), which every run
        then uses; without one, as in pocoflow 0.2, the id of the last run started by
        :meth:`run_background` (0.2 programs read it after starting one), else None.

        Unlike 0.2, that id is only reported: the next run still gets a new id.
        Assigning ``flow.run_id = "x"`` fixes the id of the runs that follow (None:
        new ids again). :attr:`last_run_id` reports the last run of any kind.
        """
        return self._fixed_run_id or self._last_background_run_id

    @run_id.setter
    def run_id(self, value: str | None) -> None:
        self._fixed_run_id = checked_run_id(value, f"Flow '{self.flow_name}'")

    @property
    def fixed_run_id(self) -> str | None:
        """The run id every run of this Flow uses (``Flow(run_id=...)``), or None."""
        return self._fixed_run_id

    @property
    def last_run_id(self) -> str | None:
        """The id of the last run started by ``run``, ``run_async``, ``run_background``,
        ``resume`` or ``fork`` on this Flow object (None before the first). With runs going on
        at once it is whichever started last; each run's own id is on its RunHandle,
        its events and its store (``store.run_id``)."""
        return self._last_run_id

    @property
    def name(self) -> str:
        """A nested flow appears under its ``flow_name`` in the outer flow."""
        return self.flow_name

    @name.setter
    def name(self, value: str) -> None:
        self.flow_name = value

    def __repr__(self) -> str:
        return f"<Flow {self.flow_name!r} start={self.start.name!r}>"

    # ── hooks ───────────────────────────────────────────────────────────────

    def on(self, event: str, callback: Callable[..., Any]) -> Flow:
        """Register a hook (sync or async); returns self for chaining.

        ``node_start(name, store)``, ``node_end(name, action, elapsed_s, store)``,
        ``node_error(name, exc, store)``, ``flow_end(steps, store)``.
        """
        if event not in self._hooks:
            raise ValueError(
                f"Flow '{self.flow_name}': unknown hook event {event!r}. Valid events: "
                f"{list(HOOK_EVENTS)}."
            )
        if not callable(callback):
            raise TypeError(
                f"Flow '{self.flow_name}': the hook for {event!r} must be callable, got "
                f"{type(callback).__name__}."
            )
        self._hooks[event].append(callback)
        return self

    # ── sinks ───────────────────────────────────────────────────────────────

    def add_sink(self, sink: SinkLike) -> Flow:
        """Subscribe *sink* to every event of every run of this flow; returns self.

        *sink* is a sync or async callable taking one event, or an object with a
        ``handle(event)`` method (:class:`pocoflow.Sink`). It hears each event
        of :mod:`pocoflow.events` in order, nested flows' runs included, before
        the next node starts. An error it raises is logged; the run goes on.
        """
        from pocoflow.sinks import UserSink

        self._sinks.append(UserSink(sink))
        return self

    def remove_sink(self, sink: SinkLike) -> None:
        """Unsubscribe a sink added with :meth:`add_sink` (runs already started keep it)."""
        self._sinks = [s for s in self._sinks if s.target != sink]

    # ── running ─────────────────────────────────────────────────────────────

    async def run_async(self, store: StoreLike, resume_from: Wired | None = None) -> Store:
        """Run to the end on the current event loop (asyncio or trio); return the store.

        A dict is written through, so it holds the final state afterwards.
        """
        from pocoflow.control import RunControl
        from pocoflow.engine import execute, new_run_id

        control = RunControl(new_run_id(self))
        self._last_run_id = control.run_id
        return await execute(self, store, start=_start_at(resume_from), control=control)

    def run(self, store: StoreLike, resume_from: Wired | None = None) -> Store:
        """Blocking version of :meth:`run_async`; see it for details.

        Works in plain scripts and where the calling thread already runs a
        loop (Jupyter, Streamlit, inside ``asyncio.run``).
        """
        from pocoflow.bridge import run_sync

        return run_sync(self.run_async, store, resume_from)

    def run_background(self, store: StoreLike, resume_from: Wired | None = None) -> RunHandle:
        """Start a run on PocoFlow's background loop and return its RunHandle at once."""
        from pocoflow.bridge import start_background

        handle = start_background(self, store, _start_at(resume_from))
        self._last_run_id = self._last_background_run_id = handle.run_id
        return handle

    async def resume_async(self, run_id: str, updates: Mapping[str, Any] | None = None) -> Store:
        """Continue a failed, cancelled, paused or interrupted run from its last checkpoint.

        The run keeps its run_id; the node to run next comes from the
        checkpoint. *updates* are written to the store first (a human's answer
        to a ``Pause``, or live objects for transient keys).
        """
        from pocoflow.control import RunControl
        from pocoflow.engine import execute
        from pocoflow.persistence.resume import prepare_resume

        start, store = await prepare_resume(self, run_id, updates)
        self._last_run_id = run_id
        return await execute(self, store, start=start, control=RunControl(run_id))

    def resume(self, run_id: str, updates: Mapping[str, Any] | None = None) -> Store:
        """Blocking version of :meth:`resume_async`; see it for details."""
        from pocoflow.bridge import run_sync

        return run_sync(self.resume_async, run_id, updates)

    # ── durable runs: queue, fork ───────────────────────────────────────────

    def submit(
        self,
        store: StoreLike = None,
        *,
        queue: str = "default",
        run_id: str | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        not_before: datetime | str | None = None,
    ) -> str:
        """Queue a run for the workers (``pocoflow worker``) and return its run_id at once;
        nothing runs here. Its input store is recorded now.

        Higher ``priority`` runs first, then older; ``not_before`` delays it. A
        ``dedup_key`` held by a run still queued or running returns that run's id
        instead of queueing a second one. ``RunHandle.for_run(run_id, db)`` follows it.
        """
        from pocoflow.persistence.submit import submission

        records = self._records("submit")
        return records.submit(
            *submission(
                self,
                records,
                store,
                queue=queue,
                run_id=run_id,
                priority=priority,
                dedup_key=dedup_key,
                not_before=not_before,
            )
        )

    async def submit_async(
        self,
        store: StoreLike = None,
        *,
        queue: str = "default",
        run_id: str | None = None,
        priority: int = 0,
        dedup_key: str | None = None,
        not_before: datetime | str | None = None,
    ) -> str:
        """Awaitable version of :meth:`submit` (the database work in a worker thread)."""
        import functools

        import anyio.to_thread

        return await anyio.to_thread.run_sync(
            functools.partial(
                self.submit,
                store,
                queue=queue,
                run_id=run_id,
                priority=priority,
                dedup_key=dedup_key,
                not_before=not_before,
            )
        )

    async def fork_async(
        self, run_id: str, step: int, updates: Mapping[str, Any] | None = None
    ) -> Store:
        """Start a new run from run *run_id*'s checkpoint at *step* (time travel): it goes
        on at the node that checkpoint names next, with its store and *updates*, numbered
        on from *step*, and records where it came from (``forked_from``,
        ``forked_at_step``). Returns the new run's store."""
        import anyio.to_thread

        from pocoflow.control import RunControl
        from pocoflow.engine import execute, new_run_id
        from pocoflow.persistence.resume import prepare_fork

        records = self._records("fork")
        start, store = await anyio.to_thread.run_sync(
            prepare_fork, self, records, run_id, step, updates
        )
        control = RunControl(new_run_id(self))
        self._last_run_id = control.run_id
        return await execute(self, store, start=start, control=control)

    def fork(self, run_id: str, step: int, updates: Mapping[str, Any] | None = None) -> Store:
        """Blocking version of :meth:`fork_async`; see it for details."""
        from pocoflow.bridge import run_sync

        return run_sync(self.fork_async, run_id, step, updates)

    def _records(self, what: str) -> Any:
        if self._db is None:
            from pocoflow.errors import FlowConfigError

            raise FlowConfigError(
                f"Flow '{self.flow_name}' has no database, so it cannot {what} runs. Build it "
                "with Flow(..., db_path='pocoflow.db') (or db_url=/db=)."
            )
        return self._db.records

    def stream(self, store: StoreLike, resume_from: Wired | None = None) -> EventStream:
        """``async for event in flow.stream(store)``: the run's events as they happen.

        The run goes on in a task of its own on your loop. Leaving the loop early
        is safe; the run is cancelled once the stream is closed (``async with
        flow.stream(store) as events``, or ``contextlib.aclosing``: at once, and
        waited for), the iterating task is cancelled, or the stream is dropped.
        """
        from pocoflow.stream import EventStream

        return EventStream(self, store, _start_at(resume_from))


def _start_at(node: Wired | None) -> Start | None:
    """0.2's ``resume_from=node``: a run that starts at that node."""
    if node is None:
        return None
    from pocoflow.graph import Start

    return Start(node=node)


def _database(db_path: Any, db_url: Any, db: Any) -> Any:
    given = [
        name
        for name, value in (("db_path", db_path), ("db_url", db_url), ("db", db))
        if value is not None
    ]
    if not given:
        return None
    if len(given) > 1:
        raise ValueError(
            f"Flow got {' and '.join(given)}; give one database: db_path (SQLite file), "
            "db_url (SQLAlchemy URL) or db (a WorkflowDB)."
        )
    if db is not None:
        return db
    from pocoflow.db import AsyncWorkflowDB

    return AsyncWorkflowDB(db_path if db_path is not None else db_url)


def checked_run_id(run_id: object, where: str) -> str | None:
    """*run_id* if it can name a run (a non-empty str) or is None (a new id per run):
    an id such as ``5`` or ``""`` would be stored as something else or not at all."""
    if run_id is None or (isinstance(run_id, str) and run_id):
        return run_id
    if not isinstance(run_id, str):
        raise TypeError(
            f"{where}: run_id must be a str (or None for a new id per run), got "
            f"{type(run_id).__name__} {run_id!r}. Pass it as a string, e.g. run_id={str(run_id)!r}."
        )
    raise ValueError(
        f"{where}: run_id must not be empty. Give a name such as 'nightly-2026-11-29', or "
        "None for a new id per run."
    )
