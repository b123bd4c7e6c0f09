"""What a run saves and how it continues: counters, learning-rate schedule, checkpoint state.

A checkpoint is a dict of tensors and numbers (``torch.load(weights_only=True)``):

==============  ================================================================================
key             what
==============  ================================================================================
policy          the policy's ``state_dict`` (weights, observation statistics)
optimizer       the optimizer's ``state_dict``
torch_rng       the global torch generator (action sampling)
generator       the minibatch generator
counters        :class:`Counters`: update, env steps, time, solved, recent episodes, schedule
reward_scale    the reward scale's running statistics (``None`` without reward scaling)
==============  ================================================================================

A resumed run may change only :data:`~logtrick.rl.config.RESUME_FIELDS` of its config
(:func:`merge_config`); a checkpoint that does not fit the config's policy is a
:class:`~logtrick.rl.errors.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from logtrick.rl import runs
from logtrick.rl.config import RESUME_FIELDS, Config
from logtrick.rl.errors import CheckpointError
from logtrick.rl.learner import Learner

__all__ = [
    "Counters",
    "checkpoint_state",
    "finished_note",
    "load_config",
    "load_policy_state",
    "merge_config",
    "read_agent_file",
    "restore",
]


@dataclass
class Counters:
    """Where a run stands; saved in the checkpoint."""

    update: int = 0
    global_step: int = 0
    train_time: float = 0.0
    """Seconds of collection and updates (evaluations excluded)."""
    solved_at_step: int = -1
    solved_at_time: float = math.nan
    recent: list[tuple[float, int]] = field(default_factory=list)
    """(return, length) of the last 20 finished training episodes."""
    lr_from_step: int = 0
    """The learning-rate schedule is a line from (``lr_from_step``, ``lr_from``) to
    (``lr_to_step``, 0), set by :meth:`start` and moved only by :meth:`extend`."""
    lr_from: float = math.nan
    lr_to_step: int = 0

    @classmethod
    def start(cls, config: Config) -> Counters:
        """A new run: the rate falls from ``config.lr`` to 0 at ``config.total_steps``."""
        return cls(lr_from=config.lr, lr_to_step=config.total_steps)

    def lr(self, config: Config) -> float:
        """The learning rate at ``global_step`` (``config.lr`` when not annealing)."""
        if not config.anneal_lr:
            return config.lr
        left = max(0, self.lr_to_step - self.global_step)
        return self.lr_from * left / max(1, self.lr_to_step - self.lr_from_step)

    def extend(self, saved: Config, config: Config) -> None:
        """A resumed run with a new budget: the rate falls from the value it reached to 0 at the
        new budget, so it never rises (``ValueError`` if it had reached 0 already)."""
        if math.isnan(self.lr_from):  # a checkpoint from before the schedule was saved
            self.lr_from, self.lr_to_step = saved.lr, saved.total_steps
        if not config.anneal_lr or config.total_steps == self.lr_to_step:
            return
        rate = self.lr(config)
        if rate == 0.0 and config.total_steps > self.global_step:
            raise ValueError(
                f"total_steps: the run annealed its learning rate to 0 at {self.lr_to_step:,} "
                f"steps (anneal_lr=True), so training on to {config.total_steps:,} would not "
                "change the policy; start a new run with the larger budget (a run trained with "
                "anneal_lr=False can be extended)"
            )
        self.lr_from_step, self.lr_from = self.global_step, rate
        self.lr_to_step = config.total_steps


def checkpoint_state(learner: Learner, counters: Counters) -> dict[str, Any]:
    """Everything needed to continue identically: tensors and numbers only."""
    return {
        "policy": learner.policy.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "generator": learner.generator.get_state(),
        "counters": dataclasses.asdict(counters),
        "reward_scale": None if learner.reward_scale is None else learner.reward_scale.state_dict(),
    }


def restore(learner: Learner, state: dict[str, Any]) -> Counters:
    """Load a checkpoint's state into ``learner``; ``CheckpointError`` if it does not fit."""
    load_policy_state(learner.policy, state, learner.config)
    try:
        learner.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        learner.generator.set_state(state["generator"])
        if learner.reward_scale is not None:
            learner.reward_scale.load_state_dict(state["reward_scale"])
        return Counters(**state["counters"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise _misfit(learner.config, err) from err


def load_policy_state(policy: torch.nn.Module, state: dict[str, Any], config: Config) -> None:
    """``policy.load_state_dict(state["policy"])``; ``CheckpointError`` if it does not fit."""
    try:
        policy.load_state_dict(state["policy"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise _misfit(config, err) from err


def _misfit(config: Config, err: Exception) -> CheckpointError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
    return CheckpointError(
        f"checkpoint: does not fit the policy of this run's config ({config.env}, {config.algo}, "
        f"hidden {config.hidden}): {reason}; was it copied from another run?"
    )


def read_agent_file(path: str | Path, format: str) -> dict[str, Any]:
    """The contents of a file written by ``Agent.save`` (``format`` its ``"format"`` entry),
    checked like a checkpoint; ``CheckpointError`` naming the file if it is something else."""
    state = runs.load_checkpoint(path)
    kinds = {"config": dict, "custom_policy": bool, "checkpoint": dict}
    wrong = [k for k, kind in kinds.items() if not isinstance(state.get(k), kind)]
    if state.get("format") != format:
        what = f"no format entry {format!r}"
    elif wrong:
        what = f"its {', '.join(wrong)} entry is missing or malformed"
    else:
        return state
    raise CheckpointError(
        f"{path}: not an agent file written by logtrick's Agent.save ({what}); load a run "
        "directory's policy with rl.load(run_dir), or save the agent again"
    )


def finished_note(run_dir: Path, config: Config, counters: Counters) -> str | None:
    """What to say when resuming a run that has taken ``config.total_steps`` already (``None``
    if it has steps left): that it is finished, and what ``--steps`` does."""
    if counters.global_step < config.total_steps:
        return None
    done = f"{run_dir}: the run is finished ({counters.global_step:,} env steps, its budget)"
    if config.anneal_lr:
        return (
            f"{done}; its learning rate was annealed to 0 (anneal_lr), so it cannot train "
            "on: start a new run with a larger --steps (total_steps)"
        )
    return (
        f"{done}; nothing to train. --steps sets the run's total budget, not steps to add: "
        f"--resume {run_dir} --steps N, with N above {counters.global_step:,}, trains on "
        "to N"
    )


def load_config(run_dir: str | Path) -> Config:
    """The :class:`Config` saved in ``run_dir`` (its ``config.json``)."""
    return Config.from_dict(runs.read_config(run_dir))


def merge_config(saved: Config, config: Config, run_dir: Path) -> Config:
    """``config`` if it differs from ``saved`` only in fields a resumed run may change."""
    conflicts = [
        f"{f.name}={getattr(config, f.name)!r} (the run's: {getattr(saved, f.name)!r})"
        for f in dataclasses.fields(Config)
        if f.name not in RESUME_FIELDS and getattr(config, f.name) != getattr(saved, f.name)
    ]
    if conflicts:
        raise ValueError(
            f"resume: {run_dir} continues with its own settings, but got {', '.join(conflicts)}; "
            f"a resumed run may change only {', '.join(RESUME_FIELDS)} (start a new run instead)"
        )
    return config
