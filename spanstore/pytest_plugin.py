"""pytest plugin: the ``spans`` and ``tracer_provider`` fixtures, and ``--spanstore-dir`` (see spanstore.testing).

Loaded automatically once spanstore is installed (entry point ``pytest11``). It does nothing to a test session until
a test uses one of its fixtures or ``--spanstore-dir`` is given: only then does it touch the global tracer provider.

Fixtures
--------
``spans``
    A :class:`spanstore.testing.CapturedSpans` holding every span ended, on any thread or asyncio task, between the
    fixture's setup and teardown: spans of the global tracer provider (made an SDK ``TracerProvider`` on first use
    if it is still the API's default proxy) and of any provider passed to ``spans.attach(provider)``. Spans ended
    before the test, after it, or in another test never appear. Request it before other fixtures whose setup spans
    you want.
``tracer_provider``
    A fresh SDK ``TracerProvider`` whose spans the ``spans`` fixture captures; shut down after the test.

Persisting every test's spans: ``--spanstore-dir DIR``
------------------------------------------------------
Every test's spans (every test, with or without the fixture: spans of the global provider and of attached
providers, ended from the start of the test's setup to the end of its teardown) are appended to the spanstore
directory ``DIR`` after the test, each tagged with the attributes ``test.nodeid``, ``test.outcome`` (``passed``,
``failed`` or ``skipped``: pytest's report outcome, so an error in setup or teardown is ``failed`` and an expected
failure is ``skipped``), ``test.run_id`` (one id per ``pytest`` invocation, shared by pytest-xdist workers) and,
under pytest-xdist, ``test.worker`` (``gw0``, ``gw1``, ...).
Safe under pytest-xdist: each worker appends its own batches to the one directory under the log's cross-process
lock. Then ``spanstore traces --attr test.outcome=failed`` shows what the failing tests did. Runs append to the
directory; delete it to start afresh. Write errors never fail a test: they are reported in the terminal summary.
"""

from __future__ import annotations

import collections
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    from spanstore.log import SpanLog
    from spanstore.model import StoredSpan
    from spanstore.testing import CapturedSpans


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spanstore", "spanstore: capture OpenTelemetry spans in tests")
    group.addoption(
        "--spanstore-dir",
        metavar="DIR",
        default=None,
        help="append every test's spans to the spanstore directory DIR, tagged with the attributes test.nodeid, "
        "test.outcome and test.run_id (read it with `spanstore --path DIR traces --attr test.outcome=failed`)",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("spanstore_dir", None)
    if path:
        config.pluginmanager.register(_SpanRecorder(config, path), "spanstore-recorder")


@pytest.fixture
def spans() -> Iterator[CapturedSpans]:
    """Every span ended during the test, as a :class:`spanstore.testing.CapturedSpans`.

    Captures the global tracer provider's spans (setting an SDK ``TracerProvider`` globally when none is set) and
    those of providers passed to ``spans.attach(provider)`` or built by the ``tracer_provider`` fixture, on any
    thread. Find spans by name and attributes: ``spans.assert_span(name="checkout", status="ERROR",
    attributes={"cart.items": 3}, parent="POST /cart")``, ``spans.one(name=...)``, ``spans.find(...)``; dump them
    with ``spans.tree()`` for a snapshot.
    """
    from spanstore.testing import capture_spans

    with capture_spans() as captured:
        yield captured


@pytest.fixture
def tracer_provider(spans: CapturedSpans) -> Iterator[TracerProvider]:
    """A fresh SDK ``TracerProvider`` for the test, its spans captured by the ``spans`` fixture; shut down after."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = spans.attach(TracerProvider(shutdown_on_exit=False))
    yield provider
    provider.shutdown()


class _TestSpans:
    """The raw SDK spans ended during one test (a router sink: ``submit`` is a ``deque.append``, thread-safe)."""

    __slots__ = ("spans", "submit")

    def __init__(self) -> None:
        self.spans: collections.deque[ReadableSpan] = collections.deque()
        self.submit = self.spans.append


class _SpanRecorder:
    """``--spanstore-dir``: capture each test's spans and append them, tagged, to the store directory."""

    def __init__(self, config: pytest.Config, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        workerinput = getattr(config, "workerinput", None)  # set in pytest-xdist workers
        self.run_id = workerinput["testrunuid"] if workerinput else uuid.uuid4().hex
        self.worker = workerinput.get("workerid") if workerinput else None
        self._log: SpanLog | None = None
        self._outcomes: dict[str, str] = {}
        self._errors: list[str] = []
        self._error_count = 0
        if workerinput is None:
            # Create the directory once, in the main process, before any worker appends; and fail early on a bad path.
            try:
                self._open().close()
            except Exception as error:
                raise pytest.UsageError(f"--spanstore-dir {path}: {error}") from None
            self._log = None

    def _open(self) -> SpanLog:
        from spanstore.log import SpanLog

        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        return SpanLog(self.path)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        from spanstore.testing import attach_global, router

        sink = _TestSpans()
        try:
            attach_global()
        except RuntimeError as error:
            self._error(f"{item.nodeid}: {error}")
        route = router()
        route.activate(sink)
        try:
            yield
        finally:
            route.deactivate(sink)
            self._save(item.nodeid, sink)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        outcome = yield
        report = outcome.get_result()
        previous = self._outcomes.get(item.nodeid)
        # The worst phase wins: a failure in any phase fails the test; a skip in setup skips it.
        if report.failed or previous is None or (previous == "passed" and report.skipped):
            self._outcomes[item.nodeid] = report.outcome

    def _error(self, message: str) -> None:
        self._error_count += 1
        if len(self._errors) < 10:
            self._errors.append(message)

    def _save(self, nodeid: str, sink: _TestSpans) -> None:
        outcome = self._outcomes.pop(nodeid, "failed")
        if not sink.spans:
            return
        try:
            tags = {"test.nodeid": nodeid, "test.outcome": outcome, "test.run_id": self.run_id}
            if self.worker is not None:
                tags["test.worker"] = self.worker
            tagged = _tag(sink.spans, tags)
            if self._log is None:
                self._log = self._open()
            self._log.append(tagged)
        except Exception as error:
            self._error(f"{nodeid}: {type(error).__name__}: {error}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # a pytest-xdist worker: tell the main process, which owns the terminal
            workeroutput["spanstore_errors"] = self._errors[:10]
            workeroutput["spanstore_error_count"] = self._error_count

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        self._errors.extend(output.get("spanstore_errors", ()))
        self._error_count += output.get("spanstore_error_count", 0)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._error_count:
            terminalreporter.section("spanstore", sep="-", red=True)
            tests = "1 test" if self._error_count == 1 else f"{self._error_count} tests"
            terminalreporter.line(f"could not record the spans of {tests} to {self.path}:")
            for error in self._errors[:10]:
                terminalreporter.line(f"  {error}")
        elif terminalreporter.config.getoption("verbose") > 0 and self.worker is None:
            terminalreporter.line(f"spanstore: spans of this run ({self.run_id}) appended to {self.path}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _tag(raw_spans: Any, tags: dict[str, str]) -> list[StoredSpan]:
    """Convert SDK spans and add (or overwrite) the given attributes: stored spans are immutable, so copies."""
    import msgspec

    from spanstore.model import AttributeMap, from_readable_span

    tagged = []
    for raw in raw_spans:
        span = from_readable_span(raw)
        attributes = dict(zip(span.attributes.keys_, span.attributes.values_, strict=True))
        attributes.update(tags)
        tagged.append(msgspec.structs.replace(span, attributes=AttributeMap.of(attributes)))
    return tagged
