"""The PocoFlow exception family.

Every error subclasses the built-in type a caller would naturally catch, so
``except TypeError`` and ``except PocoFlowError`` both work::

    Exception
    └── PocoFlowError
        ├── SchemaError (TypeError)          a Store write or schema that breaks the schema
        ├── FlowConfigError (ValueError)     a graph or node configured wrongly
        │   └── UnmatchedActionError         an action with no edge, in Flow(on_unmatched="raise")
        ├── MaxStepsExceeded (RuntimeError)  a run took more steps than Flow.max_steps
        ├── NodeTimeoutError (TimeoutError)  one exec attempt outlived Node.timeout
        ├── Pause                            raised by a node to wait for a human
        └── PersistenceError                 the run database and its checkpoints
            ├── CheckpointEncodeError (TypeError)   a store value checkpoints cannot hold
            ├── CheckpointDecodeError (ValueError)  a checkpoint that cannot be loaded
            ├── DatabaseVersionError (RuntimeError) a database newer than this PocoFlow
            ├── DatabaseFileError (OSError)         a database file that cannot be opened
            │                                       or written (not a database, disk full)
            ├── DatabaseTimeoutError (TimeoutError) a database server that did not answer
            ├── DatabaseConnectionError (ConnectionError) a server that refused the
            │                                       connection (down, no such database, login)
            ├── RunNotFoundError (KeyError)         no run or checkpoint by that id
            ├── RunExistsError (ValueError)         a new run on a run_id already recorded
            ├── RunTakenOverError (RuntimeError)    another process took the run over
            ├── RunFailedError (RuntimeError)       a run waited on from elsewhere failed
            └── ResumeError (RuntimeError)          a run that cannot be resumed (yet)

Warnings: ``UnmatchedActionWarning`` (a node returned an action with no edge,
so the flow ended there, as in pocoflow 0.2; only with ``Flow(on_unmatched="warn")``).
"""

from __future__ import annotations

from typing import Any


class PocoFlowError(Exception):
    """Base class of every error PocoFlow raises on purpose."""


class SchemaError(PocoFlowError, TypeError):
    """A value or schema entry does not fit the Store's schema."""


class FlowConfigError(PocoFlowError, ValueError):
    """A flow or node is configured in a way that cannot run."""


class UnmatchedActionError(FlowConfigError):
    """A node returned an action none of its edges match, in a flow built with
    ``on_unmatched="raise"`` (by default such an action ends the flow, as in 0.2)."""


class MaxStepsExceeded(PocoFlowError, RuntimeError):
    """A run reached ``Flow.max_steps`` and was stopped (likely a loop in the graph)."""


class NodeTimeoutError(PocoFlowError, TimeoutError):
    """One attempt of a node's exec ran longer than the node's ``timeout``."""


class Pause(PocoFlowError):
    """Raise from a node to stop the run for a human; the run ends as ``paused``.

    ``reason`` says what the human must do; keyword ``data`` travels with it.
    """

    def __init__(self, reason: str = "", **data: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


class UnmatchedActionWarning(UserWarning):
    """A node returned an action none of its edges match; the flow ended there."""


class PersistenceError(PocoFlowError):
    """Base class of the errors of the run database and its checkpoints."""


class CheckpointEncodeError(PersistenceError, TypeError):
    """A store value the checkpoint codec cannot encode (and the key is not transient)."""


class CheckpointDecodeError(PersistenceError, ValueError):
    """A checkpoint that cannot be turned back into store values."""


class DatabaseVersionError(PersistenceError, RuntimeError):
    """The database was migrated by a newer PocoFlow; it is left untouched."""


class DatabaseFileError(PersistenceError, OSError):
    """A database file that cannot be opened, read or written: not a database, a full
    disk, an I/O error. ``filename`` is the file; the message says how to fix it."""

    def __str__(self) -> str:  # OSError would show "[Errno None] None: <filename>"
        return str(self.args[0]) if self.args else ""


class DatabaseTimeoutError(PersistenceError, TimeoutError):
    """A database server did not answer in time (connect, statement or a silent
    connection); the message names the server and the setting that ran out."""


class DatabaseConnectionError(PersistenceError, ConnectionError):
    """A database server refused the connection: nothing listens there, the database
    does not exist, or the login failed; the message names the server, never the
    password."""


class RunNotFoundError(PersistenceError, KeyError):
    """No run (or no checkpoint of it) with that id in the database."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RunExistsError(PersistenceError, ValueError):
    """A new run was started on a run_id the database already holds; nothing was written."""


class RunTakenOverError(PersistenceError, RuntimeError):
    """This process lost its run: it stalled past the lease and another process took the
    run over (a resume). Its writes to the run are refused; the run stops here."""


class RunFailedError(PersistenceError, RuntimeError):
    """A run followed by its id (``RunHandle.for_run``) failed; the message holds the
    error it recorded (the exception itself stayed in the process that ran it)."""


class ResumeError(PersistenceError, RuntimeError):
    """The run cannot be resumed: it completed, is still running, or its node is gone."""


def error_text(error: BaseException) -> str:
    """An exception's message as logged and recorded; one whose ``__str__`` raises (a
    half-built exception) is named by its type, so telling of it never raises instead."""
    try:
        return str(error)
    except Exception as exc:
        return f"{type(error).__name__} (its message could not be read: {type(exc).__name__})"
