"""Optional Weights & Biases logging (``Config.wandb``, ``logtrick train --wandb``).

A W&B run gets what TensorBoard gets: the config as its hyperparameters, and every logged row's
metrics (NaN cells left out) against ``global_step``. The project is ``WANDB_PROJECT`` (else
``logtrick``), the run's name the run directory's; its files go to ``WANDB_DIR`` when set, else
into the run directory. ``WANDB_MODE=offline`` writes locally (``wandb sync`` uploads later).
A resumed run continues the same W&B run: its id is kept in the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from logtrick.rl.errors import import_extra

__all__ = ["ID_FILE", "WandbRun", "require_wandb"]

ID_FILE = ".wandb-run-id"
"""The run directory's file holding its W&B run id (a resumed run continues that run)."""


def require_wandb() -> Any:
    """The ``wandb`` module, or :class:`~logtrick.rl.errors.MissingExtraError` naming the extra."""
    return import_extra("wandb", "wandb", "wandb", "logging to Weights & Biases")


class WandbRun:
    """A W&B run mirroring a run directory's metrics and config."""

    def __init__(
        self, run_dir: Path, config: Mapping[str, Any], write: Callable[[Path, str], None]
    ) -> None:
        """``write(path, text)`` saves the run id (atomically: :func:`~logtrick.rl.runs.
        atomic_write_text`)."""
        wandb = require_wandb()
        id_file = Path(run_dir) / ID_FILE
        resume = id_file.is_file()
        run_id = id_file.read_text().strip() if resume else None  # None: W&B makes one
        where = {} if os.environ.get("WANDB_DIR") else {"dir": str(run_dir)}
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "logtrick"),
            name=Path(run_dir).name,
            id=run_id,
            resume="allow" if resume else None,
            config=dict(config),
            **where,
        )
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        if not resume:
            write(id_file, self.run.id + "\n")

    def log(self, row: Mapping[str, float]) -> None:
        """The row's metrics, as TensorBoard gets them (NaN left out), with ``global_step``."""
        metrics = {k: float(v) for k, v in row.items() if k != "update" and v == v}
        self.run.log(metrics)

    def close(self) -> None:
        self.run.finish()
