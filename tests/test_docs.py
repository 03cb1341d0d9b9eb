"""The README keeps its promises: the two Quick start commands, CI running the second, runnable examples, lint."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spanstore

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README section with this heading (up to the next heading of the same level)."""
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^\1 |\Z)", README, flags=re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(2)


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    """Quick start gives the demo command and the test command; .ci/run runs the latter verbatim."""
    commands = [block.strip() for block in fenced(section("Quick start"), "console")]
    assert len(commands) == 2 and all("\n" not in command for command in commands)
    demo, tests = commands
    assert demo.endswith("spanstore demo") and "pip install" in demo
    assert tests.endswith("python -m pytest") and "'.[test]'" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci_lines, ".ci/run must run the README's test command as written"


def python_blocks() -> list[str]:
    """README python examples, except the pytest test module of "Testing with spanstore" (run by the plugin tests)."""
    testing = section("Testing with spanstore")
    return [block for block in fenced(README, "python") if block not in fenced(testing, "python")]


@pytest.mark.parametrize("block", python_blocks(), ids=lambda block: block.strip().splitlines()[-1][:40])
def test_readme_python_examples_run(block: str, tmp_path: Path) -> None:
    """Every python example in the README runs as written, in a fresh process and an empty directory."""
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_readme_example_finds_the_failure(tmp_path: Path) -> None:
    """The first example prints the failing span, its error type and message, and the trace it belongs to."""
    block = python_blocks()[0]
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "charge card TimeoutError payment gateway did not answer",
        "['POST /checkout', 'charge card']",
    ]
    assert list((tmp_path / ".spanstore").glob("spans-*.jsonl")), "the example's spans reached the disk"


def test_configuration_table_matches_the_defaults() -> None:
    """The README's configuration table states the store's real defaults."""
    from spanstore import store

    table = section("Configuration")
    assert f"| {store.DEFAULT_MAX_SPANS:,} |" in table
    assert f"| {store.DEFAULT_MAX_BYTES >> 20} MiB |" in table
    assert f"| {store.DEFAULT_MAX_SPANS_PER_TRACE:,} |" in table


def test_public_api_has_docstrings_with_examples() -> None:
    """Every public name has a docstring with a runnable example (run by pytest's doctest collection)."""
    missing = []
    for name in spanstore.__all__:
        obj = getattr(spanstore, name)
        doc = inspect.getdoc(obj) or ""
        if ">>>" not in doc and not (isinstance(obj, type) and issubclass(obj, spanstore.SpanStoreError)):
            missing.append(name)
    assert missing == []


def test_all_is_sorted_and_complete() -> None:
    """spanstore.__all__ is alphabetical and every name in it resolves."""
    assert spanstore.__all__ == sorted(spanstore.__all__)
    for name in spanstore.__all__:
        assert getattr(spanstore, name) is not None


def test_ruff_is_clean() -> None:
    """The code passes ruff's lint and format checks (the configuration is in pyproject.toml)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
