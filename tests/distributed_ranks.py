"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc-per-node 2`` (gloo): each rank
writes what it computed to ``OUT/rank{r}.pt`` for the test to compare with one process.

Also imported by the test, for the problems both sides share (:func:`baseline_problem`,
:func:`ppo_config`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Bernoulli

import logtrick as lt
from logtrick.rl.config import Config, preset
from logtrick.rl.distributed import obs_stats

K, CALLS = 8, 3  # samples per call over all ranks; calls (the moving average needs history)
BASELINES = ("moving_average", "optimal_scale")


class Replay(Bernoulli):
    """A Bernoulli whose ``sample`` returns given draws: the ranks and the one process then
    use the same samples."""

    def __init__(self, logits: torch.Tensor, draws: torch.Tensor) -> None:
        super().__init__(logits=logits)
        self.draws = draws

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        assert tuple(sample_shape) == (len(self.draws),)
        return self.draws


def cost(b: torch.Tensor) -> torch.Tensor:
    return ((b - torch.tensor([0.2, 0.5, 0.9])) ** 2).sum(-1)


def draws() -> list[torch.Tensor]:
    """The ``(K, 3)`` samples of each call, over all ranks (rank r takes chunk r)."""
    g = torch.Generator().manual_seed(0)
    return [torch.bernoulli(torch.full((K, 3), 0.5), generator=g) for _ in range(CALLS)]


def baseline_grads(name: str, rank: int, world: int, group: object) -> list[torch.Tensor]:
    """The gradient of each call (this rank's, or the only process's with ``world=1``)."""
    theta = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    if name == "moving_average":
        baseline: object = lt.MovingAverage(group=group)
    else:
        baseline = lt.OptimalScale([theta], group=group)
    grads = []
    for x in draws():
        mine = x.chunk(world)[rank]
        theta.grad = None
        est = lt.expectation(cost, Replay(theta, mine), samples=len(mine),
                             estimator="score_function", baseline=baseline)  # fmt: skip
        est.backward()
        grads.append(theta.grad.clone())
    return grads


def ppo_config(out: str, **overrides: object) -> Config:
    fields = dict(env="CartPole-v1", algo="ppo", total_steps=3 * 64, num_envs=4, num_steps=16,
                  num_minibatches=2, update_epochs=2, normalize_advantages=False,
                  normalize_obs=True, anneal_lr=False, seed=3, out=out, progress=False,
                  plot=False, tensorboard=False)  # fmt: skip
    return Config(**{**fields, **overrides})


ALGOS: dict[str, dict[str, object]] = {
    # full-batch updates: one process on the concatenated batch is the reference
    "ppo_target_kl": dict(num_minibatches=1, update_epochs=10, target_kl=0.002),
    "npg": dict(algo="npg", num_minibatches=1, update_epochs=2, normalize_rewards=True),
    "a2c": dict(algo="a2c", num_steps=8, num_minibatches=1, normalize_rewards=True,
                total_steps=3 * 32, eval_every=32, eval_episodes=2),
    # whole episodes: the ranks collect different numbers of steps
    "reinforce": dict(algo="reinforce", baseline="none", num_minibatches=1, num_steps=8,
                      total_steps=400),
}  # fmt: skip
"""Config overrides (of :func:`ppo_config`) trained under torchrun and compared with one
process that updates on both ranks' rollouts concatenated."""


def record_run(train_module: Any, config: Config) -> dict[str, object]:
    """Train ``config`` under the ranks, recording each update's rollout, the statistics it
    saw, the update's info and the reward scale after it; and the evaluations run here."""
    updates: list[dict[str, object]] = []
    original_update, original_evaluate = train_module.update, train_module.evaluate
    evaluations: list[float] = []

    def recording(learner: Any, rollout: Any) -> object:
        stats = obs_stats(learner.policy)
        info = original_update(learner, rollout)
        scale = learner.reward_scale
        updates.append(
            {
                "rollout": rollout,
                "stats": stats,
                "info": info,
                "scale": None if scale is None else (scale.count, scale.mean, scale.var),
            }
        )
        return info

    def evaluating(*args: Any, **kwargs: Any) -> tuple[float, float]:
        evaluations.append(1.0)
        return original_evaluate(*args, **kwargs)

    train_module.update, train_module.evaluate = recording, evaluating
    try:
        result = importlib.import_module("logtrick.rl").train(config)
    finally:
        train_module.update, train_module.evaluate = original_update, original_evaluate
    return {
        "params": {k: v.clone() for k, v in result.policy.state_dict().items()},
        "rollouts": updates,
        "history": result.history,
        "evaluations": len(evaluations),
    }


def main(out: Path) -> None:
    import torch.distributed as dist

    train_module = importlib.import_module("logtrick.rl.loop")

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results: dict[str, object] = {}
    for name in BASELINES:
        for grouped in (True, False):
            grads = baseline_grads(name, rank, world, dist.group.WORLD if grouped else None)
            for g in grads:
                dist.all_reduce(g)
                g /= world
            results[f"{name}/{'group' if grouped else 'alone'}"] = grads
    # DD-PPO: the trainer itself, recording every minibatch it steps on
    ppo = record_run(train_module, ppo_config(str(out / "runs")))
    results["params"], results["rollouts"] = ppo["params"], ppo["rollouts"]
    for algo, overrides in ALGOS.items():
        results[algo] = record_run(train_module, ppo_config(str(out / algo), **overrides))
    # the default algorithm of the CartPole preset (npg) runs, two updates
    default = preset("CartPole-v1", total_steps=2 * 1024, out=str(out / "default"),
                     progress=False, plot=False, tensorboard=False)  # fmt: skip
    results["default"] = record_run(train_module, default)["history"]
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
