"""A thread that samples the size of a SQLite database's -wal file while a test writes."""

from __future__ import annotations

import threading
from pathlib import Path


class WalSampler:
    """Samples the size of the -wal file beside *path* every *every* seconds (no file to
    watch for None: a PostgreSQL run); ``largest`` is the peak, ``samples`` the looks."""

    def __init__(self, path: Path | None, every: float = 0.001) -> None:
        self.wal = Path(f"{path}-wal") if path is not None else None
        self.every = every
        self.largest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.wal is not None and not self._stop.wait(self.every):
            try:
                size = self.wal.stat().st_size
            except OSError:
                size = 0
            self.largest = max(self.largest, size)
            self.samples += 1

    def __enter__(self) -> WalSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
