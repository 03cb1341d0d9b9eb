"""Shared helpers of the bench scripts: timing loops, statistics, plain-text tables, machine info, JSON results.

Every bench module reports the same way: :func:`measure` collects samples in rounds, :func:`summarize` turns
them into ``median/p95/p99/max/spread`` (seconds), :func:`format_table` prints them with "vs." columns, and
:func:`machine_info` says where they were measured. Nothing here parses arguments or runs at import time.

>>> stats = summarize([0.001, 0.002, 0.003, 0.004], rounds=[[0.001, 0.002], [0.003, 0.004]])
>>> stats["median"], stats["max"], stats["n"]
(0.002, 0.004, 4)
>>> print(format_table(["query", "median"], [["get_trace", format_seconds(0.00012)]]))
query        median
---------  --------
get_trace  0.120 ms
"""

from __future__ import annotations

import datetime as _datetime
import gc
import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "AIMS",
    "QUERY_P95_BUDGET_SECONDS",
    "REGRESSION_MARGIN",
    "RSS_BUDGET_BYTES",
    "Aim",
    "check_aims",
    "format_bytes",
    "format_markdown_table",
    "format_seconds",
    "format_speedup",
    "format_table",
    "machine_info",
    "measure",
    "peak_rss_bytes",
    "percentile",
    "rss_bytes",
    "settle_gc",
    "summarize",
    "write_json",
]

#: The design budgets ``python -m benchmarks --check`` enforces.
QUERY_P95_BUDGET_SECONDS = 0.100
RSS_BUDGET_BYTES = 256 * 1024 * 1024

#: How much worse than the README's figure a measurement may be before ``--check`` calls it a regression. The
#: README's figures come from a shared 2-core guest where other work alone moves a p95 by up to 2x.
REGRESSION_MARGIN = 3.0


class Aim(NamedTuple):
    """A figure the README publishes, which ``--check`` holds every run to (within :data:`REGRESSION_MARGIN`).

    ``readme_row`` starts the README table row (or line) that shows it and ``readme_text`` is the figure as printed
    there (tests/test_benchmarks.py checks the README still says so). ``higher_is_better`` for throughputs.
    """

    module: str
    name: str
    value: float
    unit: str  # "s", "spans/s", "bytes"
    readme_row: str
    readme_text: str
    higher_is_better: bool = False

    def limit(self) -> float:
        """The worst value that still passes."""
        return self.value / REGRESSION_MARGIN if self.higher_is_better else self.value * REGRESSION_MARGIN

    def broken_by(self, measured: float) -> bool:
        return measured < self.limit() if self.higher_is_better else measured > self.limit()


def _query_aim(name: str, p95_ms: str) -> Aim:
    return Aim("queries", f"{name} p95", float(p95_ms) / 1000, "s", f"| {name} |", f"{p95_ms} ms")


_PROCESSOR_ROW = "| FileBasedSpanProcessor(path) | 1 |"
#: Every figure of the README's Performance section that a regression would move, by bench module.
AIMS: tuple[Aim, ...] = (
    _query_aim("get_trace", "0.091"),
    _query_aim("recent_failures", "0.680"),
    _query_aim("error_type", "0.889"),
    _query_aim("attr_eq_low_cardinality", "0.426"),
    _query_aim("attr_eq_high_cardinality", "0.092"),
    _query_aim("attr_range", "1.05"),
    _query_aim("duration_threshold", "0.587"),
    _query_aim("combined", "0.889"),
    _query_aim("find_traces", "1.32"),
    Aim("memory", "bytes held per span", 202, "bytes", "| 1,000,000 | 954,310 |", "202 B"),
    Aim("memory", "add time per span", 20.2 / 1_000_000, "s", "| 1,000,000 | 954,310 |", "20.2 s"),
    Aim("memory", "open (replay) per span on disk", 34.74 / 1_000_000, "s", "| 1,000,000 | 731.0 MB |", "34.74 s"),
    Aim("memory", "open (index) per span on disk", 0.41 / 1_000_000, "s", "| 1,000,000 | 731.0 MB |", "0.41 s"),
    Aim("codec", "encode per span", 4.5e-6, "s", "| encode, µs/span |", "| 4.5 |"),
    Aim("codec", "decode per span", 7.3e-6, "s", "| decode to validated", "| 7.3 |"),
    Aim("log", 'append fsync="never"', 224_678, "spans/s", '| append, spans/s, `fsync="never"`', "224,678", True),
    Aim("log", 'append fsync="always"', 194_603, "spans/s", '| append, spans/s, `fsync="always"`', "194,603", True),
    Aim("log", "replay", 101_095, "spans/s", "| replay, spans/s", "101,095", True),
    Aim("processor", "FileBasedSpanProcessor on_end p50", 0.5e-6, "s", "`on_end` itself costs", "~0.5 µs"),
    Aim("processor", "FileBasedSpanProcessor on-thread p50", 16.01e-6, "s", _PROCESSOR_ROW, "16.01"),
    Aim("processor", "FileBasedSpanProcessor full per span", 47.94e-6, "s", _PROCESSOR_ROW, "47.94"),
)


def _format_figure(value: float, unit: str) -> str:
    if unit == "s":
        return format_seconds(value) if value >= 1e-5 else f"{value * 1e6:.2f} µs"
    if unit == "bytes":
        return f"{value:,.0f} B"
    return f"{value:,.0f} {unit}"


def check_aims(module: str, measured: dict[str, float], *, where: str = "") -> tuple[list[str], list[dict[str, Any]]]:
    """Hold ``measured`` (aim name -> value) to the README's figures of ``module``: (violations, report rows).

    Every aim of the module must be measured (a KeyError names one that is not: a module may not skip its check).
    """
    violations: list[str] = []
    rows: list[dict[str, Any]] = []
    for aim in (a for a in AIMS if a.module == module):
        value = measured[aim.name]
        broken = aim.broken_by(value)
        rows.append(
            {"aim": aim.name, "published": aim.value, "limit": aim.limit(), "measured": value, "ok": not broken}
        )
        if broken:
            sign = ">" if not aim.higher_is_better else "<"
            violations.append(
                f"{module}: {aim.name} {_format_figure(value, aim.unit)}{where} {sign} "
                f"{_format_figure(aim.limit(), aim.unit)} ({REGRESSION_MARGIN:g}x the README's "
                f"{_format_figure(aim.value, aim.unit)})"
            )
    print(f"\n{module}: the README's figures, each checked within {REGRESSION_MARGIN:g}x (`--check` fails beyond)")
    print(
        format_table(
            ["aim (README figure)", "published", f"limit ({REGRESSION_MARGIN:g}x)", "measured", ""],
            [
                [
                    row["aim"],
                    _format_figure(row["published"], aim.unit),
                    _format_figure(row["limit"], aim.unit),
                    _format_figure(row["measured"], aim.unit),
                    "ok" if row["ok"] else "REGRESSION",
                ]
                for row, aim in zip(rows, (a for a in AIMS if a.module == module), strict=True)
            ],
            align="lrrrl",
        ),
        flush=True,
    )
    return violations, rows


_PACKAGES = ("spanstore", "opentelemetry-sdk", "opentelemetry-api", "msgspec", "sortedcontainers", "portalocker")


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted samples (``fraction`` in 0..1).

    >>> percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95), percentile([1, 2, 3], 0.5)
    (10, 2)
    """
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    rank = max(1, -(-len(sorted_samples) * fraction // 1))  # ceil(n * fraction), at least 1
    return sorted_samples[int(rank) - 1]


def summarize(samples: Sequence[float], rounds: Sequence[Sequence[float]] = ()) -> dict[str, Any]:
    """``n``, ``median``, ``p95``, ``p99``, ``max``, ``min`` of samples (seconds) and the round-to-round ``spread``.

    ``spread`` is ``(largest - smallest per-round median) / overall median``: a noise check (0.05 means the rounds
    agree within 5%); ``None`` with fewer than two rounds.
    """
    ordered = sorted(samples)
    median = percentile(ordered, 0.5)
    spread = None
    medians = [percentile(sorted(r), 0.5) for r in rounds if r]
    if len(medians) >= 2 and median > 0:
        spread = round((max(medians) - min(medians)) / median, 4)
    return {
        "n": len(ordered),
        "median": median,
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
        "min": ordered[0],
        "spread": spread,
    }


def measure(
    call: Callable[[int], object],
    *,
    rounds: int = 3,
    max_samples_per_round: int = 200,
    min_samples_per_round: int = 3,
    round_budget_seconds: float = 1.0,
) -> tuple[list[float], list[list[float]]]:
    """Time ``call(i)`` (``i`` counts calls from 0, to rotate parameters) in ``rounds`` rounds.

    A round stops after ``max_samples_per_round`` calls, or once it has spent ``round_budget_seconds`` and made at
    least ``min_samples_per_round`` calls: fast calls get many samples, a slow peer at least a few. Returns all
    samples (seconds, ``perf_counter``) and the samples per round. The GC stays enabled: it is part of the cost.
    """
    samples: list[float] = []
    per_round: list[list[float]] = []
    clock = time.perf_counter
    i = 0
    for _ in range(rounds):
        this_round: list[float] = []
        round_start = clock()
        while len(this_round) < max_samples_per_round:
            t0 = clock()
            call(i)
            t1 = clock()
            this_round.append(t1 - t0)
            i += 1
            if len(this_round) >= min_samples_per_round and t1 - round_start >= round_budget_seconds:
                break
        samples.extend(this_round)
        per_round.append(this_round)
    return samples, per_round


def settle_gc() -> None:
    """Collect, then freeze what is left: the data sets every implementation holds stop costing GC passes.

    Without it a generation-2 collection walks millions of SDK span objects in the middle of some unlucky
    sample, whichever implementation happens to be timed then.
    """
    gc.collect()
    gc.freeze()


def format_seconds(seconds: float | None) -> str:
    """``0.012 ms``, ``3.40 ms``, ``1.25 s``: milliseconds below 10 s, three significant-ish digits.

    >>> format_seconds(0.0000123), format_seconds(0.0034), format_seconds(0.5), format_seconds(12.5)
    ('0.012 ms', '3.40 ms', '500 ms', '12.5 s')
    """
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.3f} ms"
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    if seconds < 10:
        return f"{ms:.0f} ms"
    return f"{seconds:.1f} s"


def format_speedup(subject_seconds: float | None, peer_seconds: float | None) -> str:
    """How many times faster the subject is than a peer: ``peer / subject`` as ``120x`` (``0.5x`` when slower).

    >>> format_speedup(0.001, 0.25), format_speedup(0.002, 0.001), format_speedup(0.001, 0.0123)
    ('250x', '0.50x', '12.3x')
    """
    if not subject_seconds or peer_seconds is None:
        return "-"
    ratio = peer_seconds / subject_seconds
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def format_bytes(count: float | None) -> str:
    """``12.3 MB`` (MiB, as RSS is usually read), ``530 B``.

    >>> format_bytes(530), format_bytes(254 * 1024 * 1024)
    ('530 B', '254.0 MB')
    """
    if count is None:
        return "-"
    if count < 10 * 1024:
        return f"{count:,.0f} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} kB"
    return f"{count / (1024 * 1024):.1f} MB"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str = "") -> str:
    """A plain-text table (also valid Markdown when ``markdown``-style pipes are not needed).

    ``align`` gives one character per column, ``l`` or ``r``; by default the first column is left-aligned and the
    others right-aligned, as numbers read best.
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or ("l" + "r" * (len(headers) - 1))

    def line(row: Sequence[str]) -> str:
        parts = [cell.ljust(w) if a == "l" else cell.rjust(w) for cell, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells[1:])
    return "\n".join(out)


def format_markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The same table as GitHub Markdown (first column left-aligned, the rest right-aligned)."""
    out = ["| " + " | ".join(str(h) for h in headers) + " |"]
    out.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return "\n".join(out)


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for text in status:
                if text.startswith(field):
                    return int(text.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (``VmHWM``, else ``getrusage``)."""
    peak = _status_bytes("VmHWM:")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int:
    """This process's current resident set size (``VmRSS`` from ``/proc/self/status``; peak RSS where missing)."""
    current = _status_bytes("VmRSS:")
    return current if current is not None else peak_rss_bytes()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for text in cpuinfo:
                if text.startswith("model name"):
                    return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for text in meminfo:
                if text.startswith("MemTotal:"):
                    return int(text.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: CPU model and cores, memory, OS, Python, package versions, load, time."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite"] = sqlite3.sqlite_version
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_total_bytes(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        # Other processes competing for the cores make every figure noisier: recorded so a reader can tell.
        "load_average_at_start": load,
        "date": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write a results document as indented JSON (owner-only permissions, atomic replace)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, sort_keys=False)
        out.write("\n")
    os.replace(temporary, path)
