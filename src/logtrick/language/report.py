"""The trainer's run directory on rank 0: metrics.csv, TensorBoard, a progress bar, the plot.

It reuses the RL run directory's writers (:mod:`logtrick.rl.runs`): atomic files, a CSV that a
resumed run truncates to its checkpoint's step (so it equals the uninterrupted run's), and the
hyperparameters in TensorBoard.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from logtrick.collective import all_reduce_sum
from logtrick.language.config import LMConfig
from logtrick.language.tokens import Completions

__all__ = ["RunLog", "plot_lm_curve", "step_metrics"]


class RunLog:
    """Rows to ``run_dir/metrics.csv`` (and TensorBoard) and a rich progress bar; a no-op when
    ``run_dir`` is None (other ranks, or no run directory) except for the bar on rank 0."""

    def __init__(self, run_dir: Path | None, config: LMConfig, step: int) -> None:
        self.run_dir, self.config, self.logger = run_dir, config, None
        self.rows: list[dict[str, float]] = []
        if run_dir is not None:
            from logtrick.rl.runs import MetricsLogger, atomic_write_text, read_metrics

            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.json", json.dumps(config.as_dict(), indent=1))
            self.logger = MetricsLogger(run_dir, config.tensorboard, keep_until=step)
            if step == 0:
                self.logger.log_hparams(config.as_dict())
            metrics = run_dir / "metrics.csv"
            if metrics.exists() and metrics.stat().st_size:
                self.rows = [
                    {k: float(v) for k, v in r.items() if _num(v)} for r in read_metrics(metrics)
                ]
        self.bar: Any = None
        self.task: Any = None

    def progress(self, steps: int) -> Iterator[int]:
        """``range(steps)`` with a progress bar (``config.progress``, rank 0 only)."""
        if not self.config.progress or (self.run_dir is None and _rank() != 0):
            yield from range(steps)
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            self.bar, self.task = bar, bar.add_task("RL fine-tuning", total=steps)
            for i in range(steps):
                yield i
                bar.advance(self.task)

    def log(self, row: Mapping[str, float]) -> None:
        full = {"update": row["step"], "global_step": row["completions"], **row}
        self.rows.append(dict(full))
        if self.logger is not None:
            self.logger.log(full)
        if self.bar is not None:
            acc = f" acc {row['accuracy']:.3f}" if "accuracy" in row else ""
            self.bar.update(self.task, description=f"reward {row['reward']:.3f}{acc}")

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
        if self.run_dir is not None and self.rows:
            plot_lm_curve(self.rows, self.run_dir / "learning_curve.png", self.config.algo)


def _num(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _rank() -> int:
    import torch

    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def plot_lm_curve(rows: list[dict[str, float]], path: Path, title: str) -> None:
    """Mean reward and accuracy (when measured) against completions sampled, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from logtrick.rl.runs import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in ("reward", "accuracy"):
        pts = [(r["completions"], r[key]) for r in rows if key in r and "completions" in r]
        if pts:
            ax.plot(*zip(*pts), lw=1.5, label=key)
    ax.set_xlabel("completions sampled")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def step_metrics(
    c: Completions,
    total: list[float],
    per_fn: Mapping[str, list[float]],
    correct: list[bool] | None,
    stats: Mapping[str, float],
    counts: tuple[int, int, int],
) -> dict[str, float]:
    """A step's metrics over all ranks: rewards, accuracy and lengths of right and wrong
    completions (summed), and the update's diagnostics (averaged over ranks).
    ``counts = (step, completions, ranks)``."""
    step, completions, world = counts
    lengths = c.mask.sum(1).double().cpu()
    ok = torch.tensor(correct if correct is not None else [False] * len(total))
    parts = [
        torch.tensor(float(len(total))),
        torch.tensor(total).sum(),
        (~c.stopped.cpu()).sum(),
        lengths.sum(),
        ok.sum(),
        lengths[ok].sum(),
        lengths[~ok].sum(),
    ]
    parts += [torch.tensor(v).sum() for v in per_fn.values()]
    parts += [torch.tensor(v) for v in stats.values()]
    s = all_reduce_sum([torch.stack([p.double() for p in parts])], default=True)[0].tolist()
    n, right = s[0], s[4]
    row = {
        "step": float(step),
        "completions": float(completions),
        "reward": s[1] / n,
        "truncated": s[2] / n,
        "length": s[3] / n,
    }
    if correct is not None:
        row.update(
            accuracy=right / n,
            length_right=s[5] / right if right else float("nan"),
            length_wrong=s[6] / (n - right) if n > right else float("nan"),
        )
    for i, name in enumerate(per_fn):
        row[f"reward/{name}"] = s[7 + i] / n
    for i, key in enumerate(stats):
        row[key] = s[7 + len(per_fn) + i] / world
    return row
