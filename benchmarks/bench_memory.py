"""Memory and replay: RSS of a process holding a full default store, and the time to open (replay) a store directory.

Run: ``python -m benchmarks --only memory`` (``--quick``: 10^4 spans only; ``--check`` fails when the RSS of the
process holding a full default store is 256 MB or more).

Every figure comes from a fresh subprocess (``python -c``), so nothing the parent allocated counts:

* **hold**: imports spanstore and the workload, reads its RSS (``VmRSS``: the *imports-only* baseline), then streams
  ``spanstore.store.DEFAULT_MAX_SPANS`` workload spans, a trace at a time, into a ``SpanStore()`` with default
  budgets (so it holds what those budgets allow), and reads its RSS again. Reported: the total RSS (the budget is
  on this), ``bytes/span = (RSS - baseline) / spans held``, and the store's own ``memory_estimate_bytes`` beside it.
* **write**: a subprocess adds the workload to ``SpanStore(path)`` and closes it (the log on disk).
* **open**: fresh subprocesses run ``SpanStore(path)`` on that directory and report the time it took, the spans
  loaded and the RSS after; at 10^5 spans and at full default capacity; the median of a few runs is reported.
  Twice: *replay*, with the index files deleted before each run (every span decoded from OTLP JSON; the run writes
  the index file again), and *index*, from the index file of the sealed segments (only the live segment decoded).
* **CLI**: fresh ``spanstore`` processes (``stats``, ``failures``, ``trace ID``, ``traces --errors``,
  ``spans --attr``) on the full store, wall time and peak RSS (``wait4``), the index file in place. Peer:
  stdlib ``sqlite3`` holding the same spans in a database file: a fresh process connects and answers "the newest
  20 ERROR spans" (indexed on status and start).
* **families**: each other workload family of ``benchmarks.families`` (narrow, wide, huge, high_cardinality)
  written into a default ``SpanStore(path)`` until a tenth past its capacity, then opened twice in fresh processes:
  replaying the log (index files deleted) and from the index file that replay wrote; time and peak RSS of each
  (``--check`` fails when one reaches 256 MB).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]
#: The workload families (benchmarks.families) also opened from disk; "benchmark" is the workload measured above.
_OPENED_FAMILIES = ("narrow", "wide", "huge", "high_cardinality")

_HOLD = """
import gc, json, time
from benchmarks.report import peak_rss_bytes, rss_bytes
from benchmarks.workload import iter_stored_spans
from spanstore.store import SpanStore
import spanstore.query
gc.collect()
baseline = rss_bytes()
store = SpanStore()
t0 = time.perf_counter()
for batch in iter_stored_spans({size}, now_unix_nano=time.time_ns()):
    store.add_many(batch)
del batch
seconds = time.perf_counter() - t0
gc.collect()
stats = store.stats()
print(json.dumps({{"baseline_rss": baseline, "rss": rss_bytes(), "load_seconds": seconds,
                  "span_count": stats.span_count, "trace_count": stats.trace_count,
                  "evicted_spans": stats.evicted_spans, "memory_estimate_bytes": stats.memory_estimate_bytes,
                  "peak_rss": peak_rss_bytes()}}))
"""

_WRITE = """
import json, time
from benchmarks.workload import iter_stored_spans
from spanstore.store import SpanStore
t0 = time.perf_counter()
store = SpanStore({path!r}, max_spans={size}, max_bytes=1 << 40, segment_max_bytes={segment_bytes})
for batch in iter_stored_spans({size}, now_unix_nano=time.time_ns()):
    store.add_many(batch)
store.close()
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

_OPEN = """
import gc, json, time
from benchmarks.report import peak_rss_bytes, rss_bytes
from spanstore.store import SpanStore
gc.collect()
baseline = rss_bytes()
t0 = time.perf_counter()
store = SpanStore({path!r}, **{options!r})
seconds = time.perf_counter() - t0
stats = store.stats()
rss = rss_bytes()
store.close()
print(json.dumps({{"seconds": seconds, "span_count": stats.span_count, "baseline_rss": baseline, "rss": rss,
                  "peak_rss": peak_rss_bytes(), "index": stats.index}}))
"""

_FAMILY_WRITE = """
import json, time
from benchmarks.families import iter_family
from spanstore.store import SpanStore
# A queue as long as the run: the writer must drop nothing, or the log would hold less than was fed.
store = SpanStore({path!r}, max_queue=1 << 24, **{options!r})
fed = 0
capacity = None
t0 = time.perf_counter()
for batch in iter_family({family!r}, pool_spans={pool}):
    store.add_many(batch)
    fed += len(batch)
    if capacity is None and store._evicted_traces:
        capacity = fed
    if capacity is not None and fed >= capacity * 11 // 10:
        break
store.close()
print(json.dumps({{"fed": fed, "capacity": capacity, "seconds": time.perf_counter() - t0}}))
"""

_SQLITE_BUILD = """
import json, sqlite3, time
from spanstore.log import SpanLog
db = sqlite3.connect({db!r})
db.execute("CREATE TABLE spans (trace_id TEXT, span_id TEXT, name TEXT, service TEXT, status INT, start INT, "
           "end INT, attributes TEXT)")
with SpanLog({path!r}, create=False, fsync="never") as log:
    position = None
    for segment in log.segment_files():
        spans, position = log.read(position, until_segment=segment.sequence)
        db.executemany("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            (s.trace_id, s.span_id, s.name, s.service_name, int(s.status_code), s.start_time_unix_nano,
             s.end_time_unix_nano, json.dumps(s.attributes.to_dict(), default=str)) for s in spans])
db.execute("CREATE INDEX by_status_start ON spans (status, start)")
db.commit()
db.close()
print(json.dumps({{}}))
"""

_SQLITE_QUERY = """
import sqlite3
db = sqlite3.connect({db!r})
rows = db.execute("SELECT * FROM spans WHERE status = 2 ORDER BY start DESC LIMIT 20").fetchall()
assert len(rows) == 20, len(rows)
"""


def _child(code: str, timeout: float) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter at the repository root; return the JSON it printed last."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"benchmark child failed (exit {completed.returncode}): expected JSON on stdout, got\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _hold(size: int) -> dict[str, Any]:
    result = _child(_HOLD.format(size=size), timeout=1800)
    held = result["span_count"]
    result["workload_spans"] = size
    result["bytes_per_span"] = (result["rss"] - result["baseline_rss"]) / held if held else None
    result["estimate_per_span"] = result["memory_estimate_bytes"] / held if held else None
    return result


def _remove_index_files(path: Path) -> None:
    for index in path.glob("index-*.spanstore"):
        index.unlink()


def _timed_process(argv: list[str], timeout: float) -> tuple[float, int]:
    """Run a fresh process; return its wall time and peak RSS (bytes, from wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=_REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        raise
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"{argv} failed (exit {process.returncode}): {error[-2000:]}")
    if seconds > timeout:
        raise RuntimeError(f"{argv} took {seconds:.0f} s")
    return seconds, usage.ru_maxrss * 1024


def _cli_commands(path: Path, repetitions: int) -> list[dict[str, Any]]:
    """Wall time and peak RSS of reading CLI commands on a store (index file in place), and of the sqlite3 peer."""
    from spanstore.log import SpanLog

    with SpanLog(path, create=False, fsync="never") as log:
        newest = log.segment_files()[-1]
        spans, _ = log.read(until_segment=newest.sequence, max_spans=1)
    trace_id = spans[-1].trace_id
    cli = [sys.executable, "-m", "spanstore", "--path", str(path)]
    commands = [
        ("spanstore stats", [*cli, "stats"]),
        ("spanstore failures", [*cli, "failures"]),
        ("spanstore trace ID", [*cli, "trace", trace_id]),
        ("spanstore traces --errors", [*cli, "traces", "--errors"]),
        ("spanstore spans --attr db.system=postgresql", [*cli, "spans", "--attr", "db.system=postgresql"]),
    ]
    database = path.parent / "peer.sqlite3"
    _child(_SQLITE_BUILD.format(db=str(database), path=str(path)), timeout=1800)
    commands.append(
        ("sqlite3: connect + newest 20 ERROR spans", [sys.executable, "-c", _SQLITE_QUERY.format(db=str(database))])
    )
    rows = []
    for label, argv in commands:
        runs = [_timed_process(argv, timeout=600) for _ in range(repetitions)]
        rows.append(
            {
                "command": label,
                "seconds_median": statistics.median(seconds for seconds, _ in runs),
                "peak_rss": max(rss for _, rss in runs),
            }
        )
    return rows


def _replay(size: int, repetitions: int, cli: bool) -> dict[str, Any]:
    from spanstore.log import DEFAULT_SEGMENT_MAX_BYTES

    directory = Path(tempfile.mkdtemp(prefix="spanstore-bench-"))
    try:
        path = directory / "store"
        # Default segments; a --quick run's few spans would fit one, so it rolls every MiB to have an index file.
        segment_bytes = DEFAULT_SEGMENT_MAX_BYTES if size >= 100_000 else 1 << 20
        written = _child(_WRITE.format(path=str(path), size=size, segment_bytes=segment_bytes), timeout=1800)
        disk_bytes = sum(f.stat().st_size for f in path.rglob("spans-*.jsonl"))
        runs = []
        for _ in range(repetitions):
            _remove_index_files(path)
            runs.append(_child(_OPEN.format(path=str(path), options={}), timeout=1800))
        index_bytes = sum(f.stat().st_size for f in path.glob("index-*.spanstore"))
        indexed = [_child(_OPEN.format(path=str(path), options={}), timeout=1800) for _ in range(repetitions)]
        commands = _cli_commands(path, repetitions) if cli else []
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "workload_spans": size,
        "write_seconds": written["seconds"],
        "disk_bytes": disk_bytes,
        "index_bytes": index_bytes,
        "open_seconds": [r["seconds"] for r in runs],
        "open_seconds_median": statistics.median(r["seconds"] for r in runs),
        "span_count": runs[-1]["span_count"],
        "rss_after_open": runs[-1]["rss"],
        "peak_rss_during_open": runs[-1]["peak_rss"],
        "baseline_rss": runs[-1]["baseline_rss"],
        "index_open_seconds": [r["seconds"] for r in indexed],
        "index_open_seconds_median": statistics.median(r["seconds"] for r in indexed),
        "index_span_count": indexed[-1]["span_count"],
        "index_spans_loaded": indexed[-1]["index"]["spans_loaded"],
        "index_rss_after_open": indexed[-1]["rss"],
        "index_peak_rss": indexed[-1]["peak_rss"],
        "cli": commands,
    }


def _open_family(family: str, quick: bool) -> dict[str, Any]:
    """Write a family's spans into a store directory a tenth past its capacity, then open it in fresh processes:
    once replaying the log (no index file), once from the index file that replay wrote."""
    options: dict[str, Any] = {"max_spans": 2_000, "max_bytes": 4 << 20} if quick else {}
    directory = Path(tempfile.mkdtemp(prefix="spanstore-bench-"))
    try:
        path = directory / "store"
        written = _child(
            _FAMILY_WRITE.format(path=str(path), family=family, pool=2_000 if quick else 20_000, options=options),
            timeout=3600,
        )
        disk_bytes = sum(f.stat().st_size for f in path.glob("spans-*.jsonl"))
        _remove_index_files(path)
        replayed = _child(_OPEN.format(path=str(path), options=options), timeout=3600)
        index_bytes = sum(f.stat().st_size for f in path.glob("index-*.spanstore"))
        indexed = _child(_OPEN.format(path=str(path), options=options), timeout=3600)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "family": family,
        "fed": written["fed"],
        "capacity": written["capacity"],
        "disk_bytes": disk_bytes,
        "index_bytes": index_bytes,
        "replay": replayed,
        "index": indexed,
    }


def run(quick: bool) -> dict[str, Any]:
    """Measure RSS holding a full default store and open/replay times; print the tables; return the results."""
    from spanstore.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_SPANS

    hold_size = 10_000 if quick else DEFAULT_MAX_SPANS
    replay_sizes = (10_000,) if quick else tuple(sorted({100_000, DEFAULT_MAX_SPANS}))
    repetitions = 1 if quick else 3

    hold = _hold(hold_size)
    budgets = f"max_spans={DEFAULT_MAX_SPANS:,}, max_bytes={report.format_bytes(DEFAULT_MAX_BYTES)}"
    print(f"\nHolding a default SpanStore ({budgets}), fresh process")
    hold_rows = [
        [
            f"{hold['workload_spans']:,}",
            f"{hold['span_count']:,}",
            report.format_bytes(hold["rss"]),
            report.format_bytes(hold["baseline_rss"]),
            f"{hold['bytes_per_span']:,.0f} B" if hold["bytes_per_span"] else "-",
            report.format_bytes(hold["memory_estimate_bytes"]),
            f"{hold['estimate_per_span']:,.0f} B" if hold["estimate_per_span"] else "-",
            report.format_bytes(hold["peak_rss"]),
            f"{hold['load_seconds']:.1f} s",
        ]
    ]
    hold_headers = [
        "workload spans",
        "spans held",
        "RSS",
        "imports-only RSS",
        "bytes/span",
        "store estimate",
        "estimate/span",
        "peak RSS",
        "add time",
    ]
    print(report.format_table(hold_headers, hold_rows))

    replays = [_replay(size, repetitions, cli=size == replay_sizes[-1]) for size in replay_sizes]
    replay_headers = [
        "spans on disk",
        "log on disk",
        "index file",
        "open: replay (no index) median",
        "peak RSS",
        "open: from the index median",
        "spans from the index",
        "spans held",
        "RSS after open",
        "peak RSS ",
    ]
    replay_rows = [
        [
            f"{r['workload_spans']:,}",
            report.format_bytes(r["disk_bytes"]),
            report.format_bytes(r["index_bytes"]),
            f"{r['open_seconds_median']:.2f} s",
            report.format_bytes(r["peak_rss_during_open"]),
            f"{r['index_open_seconds_median']:.2f} s",
            f"{r['index_spans_loaded']:,}",
            f"{r['index_span_count']:,}",
            report.format_bytes(r["index_rss_after_open"]),
            report.format_bytes(r["index_peak_rss"]),
        ]
        for r in replays
    ]
    print("\nOpening a store directory (SpanStore(path)), fresh process each time")
    print(report.format_table(replay_headers, replay_rows))
    cli_headers = ["command (fresh process)", "wall median", "peak RSS"]
    cli_rows = [
        [row["command"], f"{row['seconds_median']:.2f} s", report.format_bytes(row["peak_rss"])]
        for row in replays[-1]["cli"]
    ]
    print(f"\nReading commands on the {replays[-1]['workload_spans']:,}-span store, index file in place")
    print(report.format_table(cli_headers, cli_rows))

    families = [_open_family(family, quick) for family in _OPENED_FAMILIES]
    family_headers = [
        "family",
        "spans fed",
        "spans held",
        "log",
        "index file",
        "open: replay",
        "peak RSS",
        "open: from the index",
        "peak RSS ",
    ]
    family_rows = [
        [
            f["family"],
            f"{f['fed']:,}",
            f"{f['index']['span_count']:,}",
            report.format_bytes(f["disk_bytes"]),
            report.format_bytes(f["index_bytes"]),
            f"{f['replay']['seconds']:.2f} s",
            report.format_bytes(f["replay"]["peak_rss"]),
            f"{f['index']['seconds']:.2f} s",
            report.format_bytes(f["index"]["peak_rss"]),
        ]
        for f in families
    ]
    print("\nOpening a store of each workload family, written a tenth past its capacity, fresh process each time")
    print(report.format_table(family_headers, family_rows))

    violations = []
    if not quick:
        for f in families:
            for way in ("replay", "index"):
                if f[way]["peak_rss"] >= report.RSS_BUDGET_BYTES:
                    violations.append(
                        f"memory: opening a store of the {f['family']} family ({way}) peaked at "
                        f"{report.format_bytes(f[way]['peak_rss'])} >= {report.format_bytes(report.RSS_BUDGET_BYTES)}"
                    )
    if not quick and hold["rss"] >= report.RSS_BUDGET_BYTES:
        violations.append(
            f"memory: RSS holding a full default store is {report.format_bytes(hold['rss'])} "
            f">= {report.format_bytes(report.RSS_BUDGET_BYTES)} ({hold['span_count']:,} spans held)"
        )
    full_replay = replays[-1]
    if not quick and full_replay["rss_after_open"] >= report.RSS_BUDGET_BYTES:
        violations.append(
            f"memory: RSS after opening a full store directory is {report.format_bytes(full_replay['rss_after_open'])}"
            f" >= {report.format_bytes(report.RSS_BUDGET_BYTES)} ({full_replay['span_count']:,} spans loaded)"
        )
    # Per span, so that a --quick run (10,000 spans) is held to the README's 300,000-span figures too.
    aim_violations, aims = report.check_aims(
        "memory",
        {
            "bytes held per span": hold["bytes_per_span"] or 0.0,
            "add time per span": hold["load_seconds"] / hold["workload_spans"],
            "open (replay) per span on disk": full_replay["open_seconds_median"] / full_replay["workload_spans"],
            # A --quick store is 1% of a full one, and opening it from an index file is then mostly fixed costs
            # (imports aside: reading the file, building the tables): its whole time is held to the full store's.
            "open (index) per span on disk": full_replay["index_open_seconds_median"]
            / (DEFAULT_MAX_SPANS if quick else full_replay["workload_spans"]),
        },
    )
    violations.extend(aim_violations)
    return {
        "aims": aims,
        "default_max_spans": DEFAULT_MAX_SPANS,
        "default_max_bytes": DEFAULT_MAX_BYTES,
        "hold": hold,
        "replay": replays,
        "families": families,
        "markdown": [
            report.format_markdown_table(hold_headers, hold_rows),
            report.format_markdown_table(replay_headers, replay_rows),
            report.format_markdown_table(cli_headers, cli_rows),
            report.format_markdown_table(family_headers, family_rows),
        ],
        "violations": violations,
    }
