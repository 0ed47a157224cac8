"""`earthembed search`: the entry point; the search lives in beam_jobs/index.py."""

from __future__ import annotations

from collections.abc import Sequence


def run(argv: Sequence[str] | None = None) -> int:
    """Entry point of `earthembed search` (beam_jobs.index.run_search)."""
    from beam_jobs.index import run_search

    return run_search(argv)
