"""spanstore's benchmarks: ``python -m benchmarks [--quick] [--check] [--only NAME] [--results-dir DIR]``.

The harness (``benchmarks/__main__.py``) runs every module ``benchmarks/bench_<name>.py`` that exposes the
protocol below, in name order, and writes each one's results to ``benchmarks/results/<name>.json``
(``<name>.quick.json`` with ``--quick``, so a smoke run never overwrites the committed full results).

The protocol of a bench module
------------------------------
* ``run(quick: bool) -> dict``: does the measuring, prints its own tables (``benchmarks.report`` has the table,
  statistics and timing helpers), and returns a JSON-ready ``dict`` of its results. ``quick=True`` is the CI
  smoke run: the smallest size, a few repetitions, a few seconds in all; no numbers from it mean anything.
* Optional keys of the returned dict the harness understands:
  ``"violations"``: a list of strings, one per budget broken (``report.QUERY_P95_BUDGET_SECONDS``,
  ``report.RSS_BUDGET_BYTES``); ``--check`` exits non-zero when any module reports one.
  ``"markdown"``: a list of Markdown tables, printed again in the final summary for the README.
* The harness adds ``benchmark``, ``quick``, ``command``, ``elapsed_seconds`` and ``machine`` (CPU model, cores,
  memory, OS, Python, package versions, date) to the document it writes.
* A module imports nothing heavy and parses no arguments at import time, and is never collected by pytest
  (``testpaths`` excludes ``benchmarks/``). A module without ``run`` is skipped (e.g. ``workload``, ``peers``).

Shared pieces: ``benchmarks.workload`` (the seeded workload, as SDK spans and as ``StoredSpan``s),
``benchmarks.peers`` (the list-scan and sqlite3 peers), ``benchmarks.report`` (statistics, tables, machine info).
"""
