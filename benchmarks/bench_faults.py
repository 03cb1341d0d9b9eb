"""Hostile input and planted files (issue 12): what is refused, what stays bounded, how long it takes.

Run: ``python -m benchmarks --only faults`` (``--quick`` for a smoke run of a few seconds). Sections:

* **plantings**: a symlink as the newest and as the next segment, a dangling ``spanstore.lock`` symlink, a
  symlinked marker, a FIFO and a hard link as segments, a store directory writable by group or others, one owned
  by another user (as root only). Each must be refused with a ``StorageError``, and no file outside the store
  directory may change.
* **fuzz**: byte and structural mutations (seeded ``random``, the mutators of ``tests/test_import_faults.py``)
  of the OTLP, Zipkin and Jaeger fixtures in ``tests/fixtures/import/``, each read with ``read_file``; any
  exception is a failure. Reports inputs and minutes per format.
* **hostile RSS**: ``spanstore import`` of 10^6 corrupt lines (10^5 with ``--quick``), in a fresh process: time
  and peak RSS above the process's RSS before the import.
* **corrupt open**: ``SpanLog.read()`` of a segment holding N corrupt lines between two good ones (20k, 40k,
  300k; 20k with ``--quick``).
* **regex**: ``(a+)+`` and ``(a|a)*b`` against 3 spans whose value is 27 and 10,000 characters.
* **import dedupe**: ``spanstore import`` of one span into a store of 10^6 spans (10^4 with ``--quick``), in a
  fresh process: time and peak RSS above its RSS before.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks import report

__all__ = ["run"]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "import"
FORMATS = ("otlp.jsonl", "zipkin.json", "jaeger.json")
_TOKENS = [b"1e999", b"-1e999", b"NaN", b"18446744073709551616", b"-1", b"null", b"true", b"[]", b"{}", b'"x"',
           b"5", b'""', b"0.5", b"[[[[", b"]]]]", b"\\ud800", b"\xff"]  # fmt: skip
_HOSTILE = [None, True, False, 0, -1, 5, 2**64, 2**63, 2**64 // 1000, 10**30, 1e308, float("inf"), float("nan"),
            "", "x", "SERVER", "int64", "CHILD_OF", "b7ad6b7169203331", "\ud800", [], {}, [1], {"key": "k"},
            {"value": {"kvlistValue": 5}}, [[[[[]]]]]]  # fmt: skip


# --- plantings ---------------------------------------------------------------------------------------------------


def _plantings(root: Path) -> list[dict[str, Any]]:
    from spanstore.errors import StorageError
    from spanstore.log import LOCK_NAME, MARKER_NAME, SpanLog, segment_name
    from spanstore.model import StoredSpan

    span = StoredSpan(trace_id="ab" * 16, span_id="cd" * 8, name="x", start_time_unix_nano=1, end_time_unix_nano=2)

    def plant_symlink(name: str, dangling: bool = False):
        def plant(store: Path, outside: Path) -> None:
            target = outside / f"target-{name}"
            if not dangling:
                target.write_bytes(b"precious\n")
            (store / name).unlink(missing_ok=True)
            (store / name).symlink_to(target)

        return plant

    def plant_marker(store: Path, outside: Path) -> None:
        (outside / "marker").write_bytes((store / MARKER_NAME).read_bytes())
        (store / MARKER_NAME).unlink()
        (store / MARKER_NAME).symlink_to(outside / "marker")

    def plant_fifo(store: Path, outside: Path) -> None:
        os.mkfifo(store / segment_name(999_999))

    def plant_hardlink(store: Path, outside: Path) -> None:
        (outside / "victim").write_bytes(b"precious\n")
        os.link(outside / "victim", store / segment_name(999_999))

    def chmod(mode: int):
        return lambda store, outside: os.chmod(store, mode)

    cases = [
        ("symlink as the newest segment", plant_symlink(segment_name(999_999))),
        ("symlink as the next segment", plant_symlink(segment_name(2))),
        ("dangling spanstore.lock symlink", plant_symlink(LOCK_NAME, dangling=True)),
        ("symlinked marker", plant_marker),
        ("FIFO as a segment", plant_fifo),
        ("hard link as a segment", plant_hardlink),
        ("directory mode 0770", chmod(0o770)),
        ("directory mode 0707", chmod(0o707)),
        ("directory mode 0777", chmod(0o777)),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cases.append(("directory owned by another user", lambda store, outside: os.chown(store, 54321, 54321)))
    rows = []
    for index, (name, plant) in enumerate(cases):
        case = root / f"planting-{index}"
        store, outside = case / "store", case / "outside"
        outside.mkdir(parents=True)
        with SpanLog(store, fsync="never") as log:
            log.append([span])
        plant(store, outside)
        before = {p.name: p.read_bytes() for p in outside.iterdir() if p.is_file()}
        refused, message = False, ""
        try:
            with SpanLog(store, fsync="never", segment_max_bytes=1) as log:
                log.append([span])
                log.append([span])
                log.read()
        except StorageError as error:
            refused, message = True, str(error)
        after = {p.name: p.read_bytes() for p in outside.iterdir() if p.is_file()}
        created = sorted(p.name for p in outside.iterdir() if p.name not in before and p.is_file())
        rows.append({"planting": name, "refused": refused, "outside_unchanged": before == after, "created": created,
                     "message": message[:160]})  # fmt: skip
    return rows


# --- fuzz --------------------------------------------------------------------------------------------------------


def json_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (the root included); shared with tests/test_import_faults.py."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(json_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(json_paths(item, (*path, index)))
    return found


def replace_at(value: Any, path: tuple, new: Any) -> Any:
    """A copy of a JSON value with the node at ``path`` replaced by ``new``."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replace_at(value[head], rest, new)}
    return [replace_at(item, rest, new) if i == head else item for i, item in enumerate(value)]


def _structural(rng: random.Random, data: bytes, jsonl: bool) -> bytes:
    documents = [json.loads(line) for line in data.splitlines()] if jsonl else [json.loads(data)]
    for _ in range(rng.randint(1, 3)):
        which = rng.randrange(len(documents))
        path = rng.choice(json_paths(documents[which]))
        documents[which] = replace_at(documents[which], path, rng.choice(_HOSTILE))
    return b"\n".join(json.dumps(document).encode() for document in documents) + b"\n"


def _bytewise(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        op = rng.randrange(4)
        if op == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 3))
        elif op == 2:
            del out[at : at + rng.randint(1, 8)]
        else:
            out[at : at + rng.randint(0, 6)] = rng.choice(_TOKENS)
    return bytes(out)


def _fuzz(root: Path, seconds_per_format: float) -> list[dict[str, Any]]:
    from spanstore.otlp import read_file

    rows = []
    for name in FORMATS:
        original = (FIXTURES / name).read_bytes()
        rng = random.Random(f"faults-{name}")
        path = root / name
        inputs = failures = spans = problems = 0
        first_failure = ""
        started = time.perf_counter()
        while time.perf_counter() - started < seconds_per_format:
            data = _structural(rng, original, name.endswith(".jsonl")) if inputs % 2 else _bytewise(rng, original)
            path.write_bytes(data)
            inputs += 1
            try:
                result = read_file(path)
            except Exception as error:
                failures += 1
                first_failure = first_failure or f"{type(error).__name__}: {error}"[:200]
                continue
            spans += len(result.spans)
            problems += result.corrupt_line_count + result.issue_count
        elapsed = time.perf_counter() - started
        rows.append({"format": name, "inputs": inputs, "minutes": round(elapsed / 60, 2), "tracebacks": failures,
                     "spans_read": spans, "problems_reported": problems, "first_failure": first_failure})  # fmt: skip
    return rows


# --- child processes: RSS of a whole command ---------------------------------------------------------------------


def _child(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, which is returned."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=3600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_MEASURE = """
import contextlib, io, json, sys, time
from benchmarks.report import peak_rss_bytes, rss_bytes
from spanstore.cli import main
def measure(argv):
    # VmRSS now and VmHWM after: both this process's own memory (ru_maxrss would carry the parent's peak).
    base = rss_bytes()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        status = main(argv)
    seconds = time.perf_counter() - started
    peak = peak_rss_bytes()
    lines = out.getvalue().strip().splitlines()
    summary = json.loads(lines[0]) if lines else {}
    mb = 1 << 20
    return {"status": status, "seconds": round(seconds, 3), "peak_rss_added_mb": round((peak - base) / mb, 1),
            "rss_before_mb": round(base / mb, 1), "peak_rss_mb": round(peak / mb, 1),
            "stderr_lines": err.getvalue().count(chr(10)), "problems_listed": len(summary.get("problems", ())),
            "problems_not_listed": summary.get("problems_not_listed"),
            "duplicates_found": summary.get("duplicate_spans")}
"""


def _hostile_rss(root: Path, lines: int) -> dict[str, Any]:
    path = root / "corrupt.jsonl"
    path.write_bytes(b"{x}\n" * lines)
    result = _child(_MEASURE + f"print(json.dumps(measure(['--path', {str(root / 'rss-store')!r}, 'import', "
                    f"{str(path)!r}, '--json'])))")  # fmt: skip
    return {"corrupt_lines": lines, "file_mb": round(path.stat().st_size / 2**20, 1), **result}


def _dedupe(root: Path, spans: int) -> dict[str, Any]:
    from benchmarks import workload
    from spanstore.log import SpanLog
    from spanstore.otlp import encode_spans

    store = root / "dedupe-store"
    last = None
    with SpanLog(store, fsync="never", max_bytes=None) as log:
        for batch in workload.iter_stored_spans(spans, seed=12, now_unix_nano=1_800_000_000 * 10**9):
            log.append(batch)
            last = batch[-1]
    one = root / "one.jsonl"
    one.write_bytes(b"".join(encode_spans([last])))
    store_mb = sum(p.stat().st_size for p in store.iterdir()) / 2**20
    result = _child(_MEASURE + f"print(json.dumps(measure(['--path', {str(store)!r}, 'import', {str(one)!r}, "
                    "'--json'])))")  # fmt: skip
    return {"store_spans": spans, "store_mb": round(store_mb, 1), **result}


# --- in process ----------------------------------------------------------------------------------------------------


def _corrupt_open(root: Path, counts: tuple[int, ...]) -> list[dict[str, Any]]:
    import logging

    from spanstore.log import SpanLog, segment_name
    from spanstore.model import StoredSpan

    span = StoredSpan(trace_id="ab" * 16, span_id="cd" * 8, name="x", start_time_unix_nano=1, end_time_unix_nano=2)
    rows = []
    logging.getLogger("spanstore.log").setLevel(logging.ERROR)
    try:
        for count in counts:
            store = root / f"corrupt-{count}"
            with SpanLog(store, fsync="never") as log:
                log.append([span])
            with open(store / segment_name(1), "ab") as f:
                f.write(b"{not json}\n" * count)
            with SpanLog(store, fsync="never") as log:
                log.append([span])
            started = time.perf_counter()
            with SpanLog(store, create=False) as log:
                spans, _ = log.read()
                skipped = log.stats().skipped_line_count
            rows.append({"corrupt_lines": count, "seconds": round(time.perf_counter() - started, 3),
                         "spans": len(spans), "skipped_counted": skipped})  # fmt: skip
    finally:
        logging.getLogger("spanstore.log").setLevel(logging.NOTSET)
    return rows


def _regex() -> list[dict[str, Any]]:
    from spanstore import AttributeFilter, AttributeMap, SpanQuery, SpanStore, StoredSpan, query_spans

    rows = []
    for length in (27, 10_000):
        store = SpanStore()
        store.add_many(
            StoredSpan(trace_id=f"{i:032x}", span_id=f"{i:016x}", name="x", start_time_unix_nano=i,
                       end_time_unix_nano=i + 1, attributes=AttributeMap.of({"u": "a" * length + "!"}))
            for i in range(1, 4)
        )  # fmt: skip
        for pattern in ("(a+)+", "(a|a)*b"):
            query = SpanQuery(attributes=[AttributeFilter("u", pattern, "matches")])
            started = time.perf_counter()
            found = query_spans(store, query)
            rows.append({"pattern": pattern, "value_chars": length + 1, "spans": 3, "matched": len(found),
                         "seconds": round(time.perf_counter() - started, 6)})  # fmt: skip
    return rows


def run(quick: bool) -> dict[str, Any]:
    """Run every section (see the module docstring); print the tables; return the results."""
    root = Path(tempfile.mkdtemp(prefix="bench_faults-"))
    os.chmod(root, 0o700)
    try:
        plantings = _plantings(root)
        fuzz = _fuzz(root, 1.0 if quick else 60.0)
        hostile = _hostile_rss(root, 100_000 if quick else 1_000_000)
        corrupt = _corrupt_open(root, (20_000,) if quick else (20_000, 40_000, 300_000))
        regex = _regex()
        dedupe = _dedupe(root, 10_000 if quick else 1_000_000)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tables = [
        report.format_table(
            ["planting", "refused", "outside unchanged"],
            [[r["planting"], r["refused"], r["outside_unchanged"] and not r["created"]] for r in plantings],
        ),
        report.format_table(
            ["format", "inputs", "minutes", "tracebacks", "problems reported"],
            [
                [r["format"], f"{r['inputs']:,}", r["minutes"], r["tracebacks"], f"{r['problems_reported']:,}"]
                for r in fuzz
            ],
        ),  # fmt: skip
        report.format_table(
            ["corrupt lines", "file MB", "import s", "RSS before MB", "peak RSS MB", "listed", "not listed"],
            [
                [
                    f"{hostile['corrupt_lines']:,}",
                    hostile["file_mb"],
                    hostile["seconds"],
                    hostile["rss_before_mb"],
                    hostile["peak_rss_mb"],
                    hostile["problems_listed"],
                    hostile["problems_not_listed"],
                ]
            ],
        ),  # fmt: skip
        report.format_table(
            ["corrupt lines in a segment", "open + read s", "skipped counted"],
            [[f"{r['corrupt_lines']:,}", r["seconds"], f"{r['skipped_counted']:,}"] for r in corrupt],
        ),
        report.format_table(
            ["pattern", "value chars", "spans", "seconds"],
            [[r["pattern"], f"{r['value_chars']:,}", r["spans"], r["seconds"]] for r in regex],
        ),
        report.format_table(
            ["store spans", "store MB", "import 1 span s", "RSS before MB", "peak RSS MB", "duplicates found"],
            [
                [
                    f"{dedupe['store_spans']:,}",
                    dedupe["store_mb"],
                    dedupe["seconds"],
                    dedupe["rss_before_mb"],
                    dedupe["peak_rss_mb"],
                    dedupe["duplicates_found"],
                ]
            ],
        ),  # fmt: skip
    ]
    print("\n\n".join(tables))
    violations = [f"faults: planting not refused: {r['planting']}" for r in plantings if not r["refused"]]
    violations += [f"faults: wrote outside the store: {r['planting']}" for r in plantings
                   if not r["outside_unchanged"] or r["created"]]  # fmt: skip
    violations += [f"faults: {r['format']}: {r['tracebacks']} tracebacks ({r['first_failure']})" for r in fuzz
                   if r["tracebacks"]]  # fmt: skip
    if hostile["peak_rss_added_mb"] > 50:
        violations.append(f"faults: import of corrupt lines added {hostile['peak_rss_added_mb']} MB RSS (> 50)")
    return {"plantings": plantings, "fuzz": fuzz, "hostile_rss": hostile, "corrupt_open": corrupt, "regex": regex,
            "import_dedupe": dedupe, "violations": violations}  # fmt: skip
