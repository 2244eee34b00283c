"""Where every benchmark's figures go: printed, and appended to docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def publish(report: str, *, to_docs: bool) -> None:
    print(report)
    if to_docs:
        with BENCHMARKS.open("a") as handle:
            handle.write("\n" + report + "\n")
