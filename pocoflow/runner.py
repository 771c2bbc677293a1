"""Where pocoflow 0.2 kept ``RunHandle``; kept so ``from pocoflow.runner import RunHandle`` works.

The implementation lives in :mod:`pocoflow.bridge`.
"""

from pocoflow.bridge import RunHandle

__all__ = ["RunHandle"]
