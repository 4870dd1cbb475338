"""The markdown tables the benchmark scripts print (docs/benchmarks.md pastes them)."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]],
                   numeric_from: int = 0) -> str:
    """A markdown table: ``header``, then ``rows`` (cells formatted by the caller).

    Columns from ``numeric_from`` on are right-aligned, the ones before left-aligned.
    """
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(x) for x in line) + " |" for line in lines)
