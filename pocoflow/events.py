"""Events: what happened during a run, as small frozen dataclasses on one stream.

This is the public seam of the engine. Every sink (user sinks added with
``Flow(sinks=...)``/``Flow.add_sink``, hooks, JSON snapshots, logging,
``Flow.stream``, OpenTelemetry and the database recorder) reads this one
stream; the engine knows nothing of them. A run emits, in order::

    FlowStarted
      (NodeStarted (NodeRetried)* (NodeFinished | NodeFailed | NodeCancelled))*
    FlowFinished

A nested flow's run emits its own FlowStarted ... FlowFinished between its
outer node's NodeStarted and NodeFinished, with its own ``run_id`` and the
outer run as ``parent_run_id``. ``kind`` matches the event names pocoflow
0.2 wrote to ``pf_events``. Events carry plain data, except ``store`` (the
live Store, as 0.2's hooks received it) and ``error`` (the exception): a sink
that keeps one past the call must copy what it needs, since the next node
changes the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pocoflow.store import Store, StoreChanges

RUN_STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")
_NO_CHANGES = StoreChanges(frozenset(), frozenset())


@dataclass(frozen=True, slots=True)
class Event:
    """Fields every event has: which run, which flow, when (UNIX seconds)."""

    kind: ClassVar[str] = "event"
    run_id: str
    flow_name: str
    ts: float


@dataclass(frozen=True, slots=True)
class FlowStarted(Event):
    """A run began at ``start_node`` with step number ``step``.

    ``resumed`` is True when the run continues an existing run (a resume,
    under the same ``run_id``); ``graph`` describes the flow's nodes and edges
    (``pocoflow.graph.describe``; shared by the flow's runs: read it, never change
    it); node ids tell apart nodes that share a name.
    """

    kind: ClassVar[str] = "flow_start"
    start_node: str
    store: Store
    step: int = 0
    parent_run_id: str | None = None
    start_node_id: str | None = None
    resumed: bool = False
    graph: dict[str, Any] | None = None
    #: keys written to the store just before the run began (a resume's updates)
    written: frozenset[str] = frozenset()
    #: the run and step whose checkpoint this run (a fork) started from
    forked_from: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class NodeStarted(Event):
    kind: ClassVar[str] = "node_start"
    step: int
    node_name: str
    store: Store
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeRetried(Event):
    """Exec attempt ``attempt`` failed after ``elapsed_s``; another follows after ``delay_s``."""

    kind: ClassVar[str] = "node_retry"
    step: int
    node_name: str
    attempt: int
    error: BaseException
    delay_s: float
    node_id: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeFinished(Event):
    """A node's post returned ``action``; ``next_node`` runs next (None: the flow ends).

    ``changes`` are the store keys the step wrote, deleted and read (see
    ``Store.take_changes``).
    """

    kind: ClassVar[str] = "node_end"
    step: int
    node_name: str
    action: str
    elapsed_s: float
    store: Store
    next_node: str | None
    changes: StoreChanges = field(default=_NO_CHANGES)
    node_id: str | None = None
    next_node_id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeFailed(Event):
    """A node raised ``error`` (after its retries and fallback); the run fails."""

    kind: ClassVar[str] = "node_error"
    step: int
    node_name: str
    error: BaseException
    store: Store
    node_id: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeCancelled(Event):
    """The run was cancelled while this node ran (an awaiting node is cut short; a sync
    exec in a thread finished its attempt first, but its step was not completed)."""

    kind: ClassVar[str] = "node_cancel"
    step: int
    node_name: str
    node_id: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FlowFinished(Event):
    """The run ended: ``status`` is completed, failed, cancelled or paused.

    ``next_node`` is the node id a resume starts at (a paused run's node);
    ``unmatched_action`` is set when the last node returned an action that
    none of its edges match, which ends a flow (as in pocoflow 0.2).
    """

    kind: ClassVar[str] = "flow_end"
    steps: int
    status: str
    store: Store
    elapsed_s: float
    last_action: str | None = None
    error: BaseException | None = None
    next_node: str | None = None
    unmatched_action: str | None = None
