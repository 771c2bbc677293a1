"""PocoFlow logging over dd-logging: the ``pocoflow.*`` logger hierarchy.

::

    pocoflow
    ├── pocoflow.store
    ├── pocoflow.node
    ├── pocoflow.flow
    ├── pocoflow.db
    └── pocoflow.runner

The library is silent until the application calls :func:`setup_logging`
(the root ``pocoflow`` logger carries a ``NullHandler``), and a disabled
logger costs one ``isEnabledFor`` check per call. dd-logging itself is only
imported when logging is configured, to keep ``import pocoflow`` fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

ROOT_LOGGER = "pocoflow"


def _root() -> logging.Logger:
    root = logging.getLogger(ROOT_LOGGER)
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    return root


def get_logger(name: str = "") -> logging.Logger:
    """Return ``pocoflow.<name>`` (``get_logger("nodes.x")`` → ``pocoflow.nodes.x``).

    Same contract as ``dd_logging.get_logger(name, "pocoflow")``: the root gets
    a ``NullHandler`` so nothing reaches Python's last-resort stderr handler.
    """
    root = _root()
    if not name:
        return root
    if name == ROOT_LOGGER or name.startswith(ROOT_LOGGER + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{ROOT_LOGGER}.{name}")


def setup_logging(
    run_name: str = "pocoflow",
    *,
    log_level: str = "info",
    log_dir: str | Path | None = None,
    console: bool = False,
    adapter: str = "",
    log_format: str | None = None,
) -> Path:
    """Attach timestamped file handler(s) to the ``pocoflow`` logger.

    Returns the log file path: ``<log_dir>/<run>-<adapter>-<YYYYMMDD-HHMMSS>.log``
    (``.jsonl`` for ``log_format="jsonl"``; ``"both"`` writes the two side by
    side and returns the text file). ``log_dir`` defaults to ``./logs``.
    Calling it again replaces the handlers of the previous call.
    """
    from pathlib import Path

    from dd_logging import LOG_LEVELS
    from dd_logging import setup_logging as dd_setup

    if str(log_level).lower() not in LOG_LEVELS:
        raise ValueError(
            f"setup_logging: log_level must be one of {sorted(LOG_LEVELS)}, got {log_level!r}."
        )
    return dd_setup(
        run_name,
        root_name=ROOT_LOGGER,
        log_level=log_level,
        log_dir=log_dir or (Path.cwd() / "logs"),
        console=console,
        adapter=adapter,
        log_format=log_format,
    )


def disable_logging() -> None:
    """Silence PocoFlow completely: drop its handlers and stop propagation.

    dd-logging removes the handlers; we add back a ``NullHandler`` so that
    warnings do not fall through to Python's last-resort stderr handler, and
    raise the level so records are not even built. ``setup_logging`` undoes it.
    """
    from dd_logging import disable_logging as dd_disable

    dd_disable(ROOT_LOGGER)
    root = logging.getLogger(ROOT_LOGGER)
    root.addHandler(logging.NullHandler())
    root.setLevel(logging.CRITICAL + 1)  # disabled loggers then cost one level check


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log a structured event (``"<event> k=v ..."``; fields become JSONL keys).

    Returns at once when *logger* is disabled for *level*.
    """
    if not logger.isEnabledFor(level):
        return
    from dd_logging import log_event as dd_log_event

    dd_log_event(logger, event, level=level, **fields)
