"""Fork safety: objects that renew their locks, threads or file handles in a forked child.

``os.register_at_fork`` callbacks can never be unregistered, so one module-level hook serves every object, held
weakly: registering costs nothing once the object is gone. In the child each registered object's
``_after_fork_in_child()`` runs, before any other code of the child.

>>> class Counter:
...     def _after_fork_in_child(self) -> None:
...         self.renewed = True
>>> register(Counter())
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

__all__ = ["register"]

logger = logging.getLogger(__name__)


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child this process forks from now on, while ``obj`` lives."""
    _registered.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_registered):
        try:
            obj._after_fork_in_child()
        except Exception:  # one object's failure must not leave the others with the parent's locks
            logger.exception("spanstore: renewing %r after fork failed", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
