"""What the end of ``logtrick train`` prints: the run directory's files, one line each with what
it is, and the commands that come next (evaluate the policy, open TensorBoard)."""

from __future__ import annotations

import shlex
from pathlib import Path

from logtrick.rl import runs

__all__ = ["RUN_FILES", "next_commands", "run_dir_listing", "run_summary"]

RUN_FILES: dict[str, str] = {
    runs.CONFIG: "the run's settings (read by evaluate, --resume and rl.load_config)",
    runs.METRICS: "one row per update: steps, returns, losses, steps/s",
    runs.CHECKPOINT: "policy, optimizer and counters of the last checkpoint",
    runs.CURVE: "training and evaluation return vs env steps and time",
    "tensorboard": "TensorBoard events: the metrics and the hyperparameters",
    "wandb": "Weights & Biases files (an offline run: wandb sync)",
}
"""What each file (or folder) a run writes holds."""


def run_dir_listing(run_dir: str | Path) -> list[str]:
    """One line per entry of ``run_dir`` (hidden files left out): its name, then what it is."""
    entries = sorted(p for p in Path(run_dir).iterdir() if not p.name.startswith("."))
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    width = max(map(len, names), default=0)
    return [
        f"{name:<{width}}  {RUN_FILES.get(p.name, '')}".rstrip() for name, p in zip(names, entries)
    ]


def next_commands(run_dir: str | Path) -> list[str]:
    """The commands to run next on ``run_dir``: evaluate its policy, open its TensorBoard."""
    path = shlex.quote(str(run_dir))
    board = f"tensorboard --logdir {path}"
    if not (Path(run_dir) / "tensorboard").is_dir():
        board += "   (this run wrote no events: tensorboard was off)"
    return [f"logtrick evaluate {path}", board]


def run_summary(run_dir: str | Path) -> str:
    """The listing and the next commands, as printed at the end of ``logtrick train``."""
    lines = ["the run directory holds:"]
    lines += ["  " + line for line in run_dir_listing(run_dir)]
    lines += ["next:"] + ["  " + line for line in next_commands(run_dir)]
    return "\n".join(lines)
