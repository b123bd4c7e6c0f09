"""The training progress bar: steps done of the budget, steps/s, recent return, elapsed time.

It fits an 80-column terminal with the total in view (the env's name gives way first), and shows
no remaining-time estimate: a run stops when an evaluation reaches the threshold, usually long
before the budget, so "time left" at the budget's pace would be wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from logtrick.rl.config import Config

__all__ = ["progress_bar"]

RESERVED = 2 * 11 + 1 + len("123456 steps/s") + len("return -12345.6") + len("0:00:00") + 5 + 8
"""Columns kept for the count (up to 9,999,999,999), steps/s, return, elapsed time, the gaps
and the smallest bar; the env's name takes what is left of the terminal."""


def progress_bar(config: Config, console: Console | None = None) -> Progress:
    """A rich ``Progress`` for ``config``'s run (disabled with ``progress=False``); its task
    takes ``total``, ``completed`` and the fields ``sps`` and ``ret`` (strings)."""
    from rich import get_console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    count = len(f"{config.total_steps:,}")
    room = (console or get_console()).width - RESERVED + 2 * (11 - count)
    name = _shorten(f"{config.env} {config.algo}", max(room, 8))
    return Progress(
        TextColumn(name, markup=False, table_column=Column(no_wrap=True)),
        BarColumn(bar_width=None, table_column=Column(ratio=1)),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}", table_column=_fixed()),
        TextColumn("{task.fields[sps]} steps/s", table_column=_fixed()),
        TextColumn("return {task.fields[ret]}", table_column=_fixed()),
        TimeElapsedColumn(table_column=_fixed()),
        console=console,
        expand=True,
        disable=not config.progress,
    )


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _fixed() -> Any:
    from rich.table import Column

    return Column(no_wrap=True)
