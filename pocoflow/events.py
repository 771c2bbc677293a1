"""Events: what happened during a run, as small frozen dataclasses on one stream.

Every sink (user hooks, JSON snapshots, logging, ``Flow.stream``, and the
database recorder) reads this one stream; the engine knows nothing of them.
``kind`` matches the event names pocoflow 0.2 wrote to ``pf_events``.
Events carry the live ``store``: a sink that keeps one past the call must copy
what it needs, since the next node will change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pocoflow.store import Store, StoreChanges

RUN_STATUSES = ("queued", "running", "paused", "completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Event:
    """Fields every event has: which run, which flow, when (UNIX seconds)."""

    kind: ClassVar[str] = "event"
    run_id: str
    flow_name: str
    ts: float


@dataclass(frozen=True, slots=True)
class FlowStarted(Event):
    kind: ClassVar[str] = "flow_start"
    start_node: str
    store: Store
    step: int = 0
    parent_run_id: str | None = None
    flow_ref: Any = None  # the Flow being run, and the node it starts at
    start_ref: Any = None


@dataclass(frozen=True, slots=True)
class NodeStarted(Event):
    kind: ClassVar[str] = "node_start"
    step: int
    node_name: str
    store: Store


@dataclass(frozen=True, slots=True)
class NodeRetried(Event):
    """An exec attempt failed and another follows after ``delay_s``."""

    kind: ClassVar[str] = "node_retry"
    step: int
    node_name: str
    attempt: int
    error: BaseException
    delay_s: float


@dataclass(frozen=True, slots=True)
class NodeFinished(Event):
    """A node's post returned; ``next_node`` is who runs next (None: the flow ends)."""

    kind: ClassVar[str] = "node_end"
    step: int
    node_name: str
    action: str
    elapsed_s: float
    store: Store
    next_node: str | None
    changes: StoreChanges = field(default=StoreChanges(frozenset(), frozenset()))
    next_ref: Any = None  # the node object that runs next


@dataclass(frozen=True, slots=True)
class NodeFailed(Event):
    kind: ClassVar[str] = "node_error"
    step: int
    node_name: str
    error: BaseException
    store: Store


@dataclass(frozen=True, slots=True)
class FlowFinished(Event):
    """The run ended: ``status`` is completed, failed, cancelled or paused."""

    kind: ClassVar[str] = "flow_end"
    steps: int
    status: str
    store: Store
    elapsed_s: float
    last_action: str | None = None
    error: BaseException | None = None
    next_node: str | None = None
