"""Workload families: spans of very different shapes, to hold the memory budget against (issue #14).

Each family is an endless, seeded stream of whole traces (lists of ``StoredSpan``), cheap enough to feed a store
ten times its capacity:

=================  ==================================================================================================
narrow             2 attributes a span (``http.route`` of 20 values, ``http.response.status_code``), traces of 8
benchmark          the benchmark's own workload (:mod:`benchmarks.workload`): a pool of generated traces replayed
                   with fresh trace ids
wide               20 attributes of ~300 characters (mostly distinct), a 5-string array, 10% of spans with an
                   ``exception`` event carrying a 3 KB stack trace
huge               2 attributes of 100 KB (distinct) a span, besides a route and a status code
high_cardinality   7 attributes: ``user.id`` (~100,000 values), a random float, an int, a bool and short strings;
                   12 services, traces of 5-40 spans, 3% errors
=================  ==================================================================================================

``python -m benchmarks --only families`` feeds each into a default store in a fresh process (see
:mod:`benchmarks.bench_families`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import msgspec

from spanstore.model import AttributeMap, Resource, Scope, SpanEvent, SpanKind, StatusCode, StoredSpan

__all__ = ["FAMILIES", "iter_family"]

FAMILIES = ("narrow", "benchmark", "wide", "huge", "high_cardinality")

_SCOPE = Scope(name="families", version="1.0")


def _resources(count: int) -> list[Resource]:
    return [
        Resource(attributes=AttributeMap.of({"service.name": f"service-{i:02d}", "host.name": f"host-{i % 4}"}))
        for i in range(count)
    ]


def _text(rng: random.Random, size: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:-"
    return "".join(rng.choices(alphabet, k=size))


def _trace(
    rng: random.Random, size: int, start: int, resources: list[Resource], attributes_of, name_of, error_rate: float
) -> list[StoredSpan]:
    trace_id = f"{rng.getrandbits(128) | 1:032x}"
    spans = []
    span_ids = [f"{rng.getrandbits(64) | 1:016x}" for _ in range(size)]
    for i in range(size):
        parent = None if i == 0 else span_ids[rng.randrange(i)]
        begin = start + i * 1000
        failed = rng.random() < error_rate
        attributes, events = attributes_of(rng, i, failed)
        spans.append(
            StoredSpan(
                trace_id=trace_id,
                span_id=span_ids[i],
                parent_span_id=parent,
                name=name_of(rng, i),
                kind=SpanKind.SERVER if i == 0 else SpanKind.INTERNAL,
                start_time_unix_nano=begin,
                end_time_unix_nano=begin + rng.randrange(1_000, 50_000_000),
                status_code=StatusCode.ERROR if failed else StatusCode.UNSET,
                attributes=AttributeMap.of(attributes),
                events=events,
                resource=resources[rng.randrange(len(resources))],
                scope=_SCOPE,
            )
        )
    return spans


def _narrow(rng: random.Random, now: int) -> Iterator[list[StoredSpan]]:
    resources = _resources(4)
    routes = [f"/api/v1/resource-{i}" for i in range(20)]

    def attributes_of(rng: random.Random, i: int, failed: bool):
        return {"http.route": rng.choice(routes), "http.response.status_code": 500 if failed else 200}, ()

    clock = now
    while True:
        clock += 1_000_000
        yield _trace(rng, 8, clock, resources, attributes_of, lambda rng, i: f"op-{i}", 0.02)


def _wide(rng: random.Random, now: int) -> Iterator[list[StoredSpan]]:
    resources = _resources(8)
    corpus = _text(rng, 1 << 20)
    keys = [f"app.wide.attribute_{k:02d}" for k in range(20)]
    counter = 0

    def piece(size: int) -> str:
        nonlocal counter
        counter += 1
        offset = rng.randrange(len(corpus) - size)
        return f"{counter:010d}" + corpus[offset : offset + size - 10]

    def attributes_of(rng: random.Random, i: int, failed: bool):
        attributes = {key: piece(300) for key in keys}
        attributes["app.tags"] = tuple(piece(24) for _ in range(5))
        events = ()
        if rng.random() < 0.1:
            events = (
                SpanEvent(
                    name="exception",
                    time_unix_nano=now,
                    attributes=AttributeMap.of(
                        {
                            "exception.type": "ValueError",
                            "exception.message": piece(80),
                            "exception.stacktrace": piece(3000),
                        }
                    ),
                ),
            )
        return attributes, events

    clock = now
    while True:
        clock += 1_000_000
        yield _trace(rng, 6, clock, resources, attributes_of, lambda rng, i: f"wide-op-{i}", 0.1)


def _huge(rng: random.Random, now: int) -> Iterator[list[StoredSpan]]:
    resources = _resources(2)
    corpus = _text(rng, 1 << 21)
    counter = 0

    def attributes_of(rng: random.Random, i: int, failed: bool):
        nonlocal counter
        values = {"http.route": "/upload", "http.response.status_code": 200}
        for key in ("app.request.body", "app.response.body"):
            counter += 1
            offset = rng.randrange(len(corpus) - 100_000)
            values[key] = f"{counter:010d}" + corpus[offset : offset + 100_000 - 10]
        return values, ()

    clock = now
    while True:
        clock += 1_000_000
        yield _trace(rng, 2, clock, resources, attributes_of, lambda rng, i: f"upload-{i}", 0.0)


def _high_cardinality(rng: random.Random, now: int) -> Iterator[list[StoredSpan]]:
    resources = _resources(12)
    names = [f"op-{i}" for i in range(60)]
    methods = ("GET", "POST", "PUT", "DELETE")

    def attributes_of(rng: random.Random, i: int, failed: bool):
        return {
            "user.id": f"user-{rng.randrange(100_000)}",
            "latency.budget": rng.random(),
            "app.items": rng.randrange(1000),
            "app.cached": rng.random() < 0.5,
            "http.request.method": rng.choice(methods),
            "app.region": f"region-{rng.randrange(8)}",
            "app.tier": rng.choice(("free", "pro", "enterprise")),
        }, ()

    clock = now
    while True:
        clock += 1_000_000
        yield _trace(rng, rng.randrange(5, 41), clock, resources, attributes_of, lambda rng, i: rng.choice(names), 0.03)


def _benchmark(rng: random.Random, now: int, pool_spans: int) -> Iterator[list[StoredSpan]]:
    from benchmarks.workload import iter_stored_spans

    pool = [list(batch) for batch in iter_stored_spans(pool_spans, now_unix_nano=now)]
    while True:
        for batch in pool:
            trace_id = f"{rng.getrandbits(128) | 1:032x}"
            yield [msgspec.structs.replace(span, trace_id=trace_id) for span in batch]


def iter_family(name: str, *, seed: int = 14, now_unix_nano: int | None = None, pool_spans: int = 20_000):
    """An endless stream of traces (lists of ``StoredSpan``) of one family (see :data:`FAMILIES`).

    >>> batch = next(iter_family("narrow"))
    >>> len(batch), len(batch[0].attributes)
    (8, 2)
    """
    rng = random.Random(seed)
    now = now_unix_nano if now_unix_nano is not None else time.time_ns() - 3600 * 10**9
    if name == "narrow":
        return _narrow(rng, now)
    if name == "benchmark":
        return _benchmark(rng, now, pool_spans)
    if name == "wide":
        return _wide(rng, now)
    if name == "huge":
        return _huge(rng, now)
    if name == "high_cardinality":
        return _high_cardinality(rng, now)
    raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)}")
