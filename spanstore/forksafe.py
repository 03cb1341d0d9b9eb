"""Fork safety: objects that renew their locks, threads or file handles in a forked child.

``os.register_at_fork`` callbacks can never be unregistered, so one module-level hook serves every object, held
weakly: registering costs nothing once the object is gone. In the child each registered object's
``_after_fork_in_child()`` runs, before any other code of the child.

An object may also define ``_before_fork()`` and ``_after_fork_in_parent()``: called in the parent around the fork
(in registration order before it, in reverse order after it), e.g. to hold a lock across the fork so the child
never sees a structure another thread was halfway through updating.

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


_held: list[ForkAware] = []  # the objects whose _before_fork ran, in order, until the fork is done


def _before_fork() -> None:
    for obj in list(_registered):
        before = getattr(obj, "_before_fork", None)
        if before is None:
            continue
        try:
            before()
        except Exception:
            logger.exception("spanstore: preparing %r for fork failed", obj)
            continue
        _held.append(obj)


def _after_fork_in_parent() -> None:
    while _held:
        obj = _held.pop()
        try:
            obj._after_fork_in_parent()  # type: ignore[attr-defined]
        except Exception:
            logger.exception("spanstore: resuming %r after fork failed", obj)


def _after_fork_in_child() -> None:
    _held.clear()
    for obj in list(_registered):
        try:
            obj._after_fork_in_child()
        except Exception:  # one object's failure must not leave the others with the parent's locks
            logger.exception("spanstore: renewing %r after fork failed", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
