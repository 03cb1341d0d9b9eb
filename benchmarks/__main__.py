"""``python -m benchmarks [--quick] [--check] [--only NAME ...] [--results-dir DIR]``: run every bench module.

Exit status: 0 when every module ran (and, with ``--check``, no budget was broken); 1 when ``--check`` found a
broken budget; 2 when a module failed (its traceback is printed; the other modules still run).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks import report

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def discover() -> list[str]:
    """The names (without ``bench_``) of the bench modules in this package, sorted."""
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes, few repetitions: a smoke test")
    parser.add_argument(
        "--check",
        action="store_true",
        help=(
            "exit 1 when a budget is broken (RSS at default capacity >= 256 MB, any query p95 >= 100 ms) or a "
            "figure the README publishes got more than 3x worse (report.AIMS)"
        ),
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this bench module ('queries' or 'bench_queries'); repeatable",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where JSON goes (default {RESULTS_DIR} for a full run; a --quick run writes none unless given this)",
    )
    parser.add_argument("--list", action="store_true", help="list the bench modules and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the selected bench modules; return the exit status."""
    args = _parser().parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = {name.removeprefix("bench_") for name in args.only}
        unknown = wanted - set(names)
        if unknown:
            print(f"unknown bench module(s): {', '.join(sorted(unknown))}; expected one of {', '.join(names)}")
            return 2
        names = [name for name in names if name in wanted]
    machine = report.machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, {machine['platform']}")
    load, cores = machine.get("load_average_at_start"), machine.get("cores") or 1
    if load and load[0] > 0.5 * cores:
        print(f"warning: load average {load[0]} on {cores} cores: other processes will add noise to the figures")
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    failed: list[str] = []
    violations: list[str] = []
    markdown: list[str] = []
    for name in names:
        print(f"\n=== {name} {'(quick)' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            run = getattr(module, "run", None)
            if not callable(run):
                print(f"benchmarks.bench_{name} has no run(quick) function: skipped")
                continue
            result: dict[str, Any] = run(quick=args.quick)
        except Exception:  # one broken module must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
            continue
        elapsed = time.perf_counter() - started
        document = {
            "benchmark": name,
            "quick": args.quick,
            "command": command.strip(),
            "elapsed_seconds": round(elapsed, 2),
            "machine": machine,
            **result,
        }
        results_dir = args.results_dir or (None if args.quick else RESULTS_DIR)
        path = results_dir / f"{name}{'.quick' if args.quick else ''}.json" if results_dir else "(not written)"
        if results_dir:
            report.write_json(path, document)
        violations.extend(result.get("violations") or ())
        markdown.extend(result.get("markdown") or ())
        print(f"--- {name}: {elapsed:.1f} s, results in {path}", flush=True)
    if markdown and not args.quick:
        print("\n=== Markdown\n\n" + "\n\n".join(markdown))
    for violation in violations:
        print(f"BUDGET: {violation}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 2
    if args.check and violations:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
