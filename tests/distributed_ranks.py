"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc-per-node 2`` (gloo): each rank
writes what it computed to ``OUT/rank{r}.pt`` for the test to compare with one process.

Also imported by the test, for the problems both sides share (:func:`baseline_problem`,
:func:`ppo_config`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.distributions import Bernoulli

import logtrick as lt
from logtrick.rl.config import Config

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
    return Config(env="CartPole-v1", algo="ppo", total_steps=3 * 64, num_envs=4, num_steps=16,
                  num_minibatches=2, update_epochs=2, normalize_advantages=False,
                  normalize_obs=True, anneal_lr=False, seed=3, out=out, progress=False, plot=False,
                  tensorboard=False, **overrides)  # fmt: skip


def main(out: Path) -> None:
    import importlib

    import torch.distributed as dist

    from logtrick.rl import distributed

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
    batches: list[dict[str, torch.Tensor]] = []
    original = train_module.update

    def recording(learner: object, rollout: object) -> object:
        batches.append({"rollout": rollout, "stats": distributed.obs_stats(
            learner.policy)})  # fmt: skip
        return original(learner, rollout)

    train_module.update = recording
    result = importlib.import_module("logtrick.rl").train(ppo_config(str(out / "runs")))
    results["params"] = {k: v.clone() for k, v in result.policy.state_dict().items()}
    results["rollouts"] = batches
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
