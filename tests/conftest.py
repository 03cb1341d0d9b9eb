"""Hypothesis profile ``mutation`` for ``mutmut run``: the same examples every run, no example database."""

from __future__ import annotations

from hypothesis import settings

# A mutant must be killed or survive for the same examples every time it runs, and no run may read another's
# failing examples from a shared database.
settings.register_profile("mutation", deadline=None, derandomize=True, database=None)
