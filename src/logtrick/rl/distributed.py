r"""The learner across processes: DD-PPO-style data parallelism on ``torch.distributed``.

``torchrun --nproc-per-node N -m logtrick train ...`` starts N ranks (detected from
``WORLD_SIZE``). Every rank steps its own share of the ``num_envs`` environments (reset seeds
offset by rank, so N ranks together step exactly the envs of one process with ``num_envs``),
computes the update on its own rollout, and before every optimizer step the gradients are
averaged over the ranks as one flattened buffer:

.. math::  g \leftarrow \frac1N \sum_{r=1}^{N} g_r

so the parameters stay identical on every rank. The observation statistics are merged over the
ranks after each rollout (by merging moments, :func:`all_reduce_obs_stats`). Only rank 0 writes
the run directory. Backend: gloo on CPU, nccl on GPU.

What differs from one process with all the envs: advantage normalisation, the reward scale and
the minibatch split are per rank (as in DD-PPO), and each rank's minibatch gradient has the same
weight whatever its number of valid transitions. ``npg`` (its actor step is not an optimizer
step), ``target_kl`` (ranks could stop after different epochs) and rollouts of whole episodes
(ranks would take different numbers of steps) are refused.

References:
    Wijmans et al., *DD-PPO: Learning Near-Perfect PointGoal Navigators from 2.5 Billion
    Frames*, ICLR 2020.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from logtrick.collective import all_reduce_sum, is_distributed
from logtrick.rl.config import Config
from logtrick.rl.learner import Learner
from logtrick.rl.policies import ActorCritic, merge_moments

__all__ = [
    "Ranks",
    "all_reduce_gradients",
    "all_reduce_obs_stats",
    "check_data_parallel",
    "init_ranks",
    "learner_device",
    "local_envs",
    "place",
    "shard",
]


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the data-parallel ranks."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def writer(self) -> bool:
        """Only rank 0 writes the run directory, logs and checkpoints."""
        return self.rank == 0


def ranks_from_env() -> Ranks:
    """The ranks as ``torchrun`` sets them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    env = os.environ
    return Ranks(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


def learner_device(config: Config, ranks: Ranks | None = None) -> torch.device:
    """The learner's device: ``config.device`` (``"auto"``: cuda when available), one GPU per
    local rank."""
    kind = config.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    if kind == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", (ranks or Ranks()).local_rank % torch.cuda.device_count())


def check_data_parallel(config: Config, parts: int, what: str) -> None:
    """Refuse what cannot be split into ``parts`` (ranks or workers) identically."""
    if config.num_envs % parts:
        raise ValueError(
            f"num_envs: {config.num_envs} envs cannot be split evenly over "
            f"{parts} {what}; use a multiple of {parts}"
        )
    if config.whole_episodes:
        raise ValueError(
            f"algo: {config.algo} without a critic collects whole episodes, whose "
            f"lengths differ between {what}; use baseline='value'"
        )
    if what == "ranks" and (config.algo == "npg" or config.target_kl is not None):
        raise ValueError(
            "algo/target_kl: npg and target_kl are not supported across ranks "
            f"(got algo={config.algo!r}, target_kl={config.target_kl})"
        )


def init_ranks(config: Config) -> Ranks:
    """Join the process group ``torchrun`` describes (gloo on CPU, nccl on GPU); one process:
    nothing to join."""
    ranks = ranks_from_env()
    if ranks.world == 1:
        return ranks
    check_data_parallel(config, ranks.world, "ranks")
    dist = torch.distributed
    if not dist.is_initialized():
        device = learner_device(config, ranks)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks


def shard(seeds: list[int], index: int, parts: int) -> list[int]:
    """Part ``index`` of ``parts`` equal consecutive parts of ``seeds`` (one rank's or one
    worker's envs: together they are the envs of one process)."""
    size = len(seeds) // parts
    return seeds[index * size : (index + 1) * size]


def all_reduce_gradients(params: list[Tensor]) -> None:
    r"""Average the gradients over the ranks, in place, as one flattened buffer:
    :math:`g \leftarrow \frac1N\sum_r g_r`. Every rank must have gradients on the same
    parameters (the same code path). Nothing happens in one process."""
    grads = [p.grad for p in params if p.grad is not None]
    if not is_distributed(default=True) or not grads:
        return
    world = torch.distributed.get_world_size()
    summed = all_reduce_sum(grads, default=True)
    torch._foreach_copy_(grads, summed)
    torch._foreach_div_(grads, world)


def all_reduce_obs_stats(
    policy: ActorCritic, before: tuple[Tensor, Tensor, Tensor], obs: Tensor
) -> None:
    r"""Merge every rank's rollout observations into the statistics ``before`` it.

    .. math::  n = \sum_r n_r,\quad \mu = \frac1n \sum_r n_r \mu_r,\quad
               \sigma^2 = \frac1n \sum_r n_r \big(\sigma_r^2 + (\mu_r - \mu)^2\big)

    (the pooled moments of all ranks' observations, Chan et al. 1979), then merged with
    ``before`` (the statistics every rank shared before the rollout) by
    :func:`~logtrick.rl.policies.merge_moments`: every rank ends with the statistics one process
    would have from all the observations.

    Args:
        policy: the rank's policy (its statistics are overwritten).
        before: ``(count, mean, var)`` of the shared statistics before the rollout.
        obs: ``(T, B, *obs_shape)`` the rank's rollout observations.
    """
    if not policy.normalize_obs:
        return
    x = obs.reshape(-1, policy.obs_mean.numel()).to(policy.obs_mean)
    var_r, mean_r = torch.var_mean(x, 0, correction=0)
    n_r = torch.full((1,), float(len(x)), dtype=x.dtype)
    n, total = all_reduce_sum([n_r, n_r * mean_r], default=True)
    mean = total / n
    (spread,) = all_reduce_sum([n_r * (var_r + (mean_r - mean) ** 2)], default=True)
    count, mean, var = merge_moments(
        float(before[0]), before[1], before[2], float(n), mean, spread / n
    )
    policy.load_state_dict(
        {"obs_count": torch.tensor(count, dtype=x.dtype), "obs_mean": mean, "obs_var": var},
        strict=False,
    )


def obs_stats(policy: ActorCritic) -> tuple[Tensor, Tensor, Tensor]:
    """A copy of the policy's ``(count, mean, var)`` observation statistics."""
    return policy.obs_count.clone(), policy.obs_mean.clone(), policy.obs_var.clone()


class RankCollector:
    """A collector whose rollouts leave the observation statistics merged over the ranks.

    Wraps the in-process :class:`~logtrick.rl.rollout.Collector` (same ``collect()``).
    """

    def __init__(self, collector: object, policy: ActorCritic) -> None:
        self.collector, self.policy = collector, policy

    def collect(self) -> object:
        before = obs_stats(self.policy)
        rollout = self.collector.collect()  # type: ignore[attr-defined]
        all_reduce_obs_stats(self.policy, before, rollout.obs)
        return rollout


def local_envs(config: Config, ranks: Ranks) -> int:
    """Envs stepped in this process: its rank's share, or one (for the spaces) with workers."""
    if config.workers and ranks.world > 1:
        raise ValueError(
            f"workers: Ray workers ({config.workers}) and torchrun ranks "
            f"({ranks.world}) cannot be combined; use one of them"
        )
    return 1 if config.workers else config.num_envs // ranks.world


def place(learner: Learner, ranks: Ranks) -> Learner:
    """Move the learner to ``config.device``; across ranks, average the gradients before each
    step and give each rank its own action-sampling stream (the weights start equal)."""
    learner.policy.to(learner_device(learner.config, ranks))
    if ranks.world > 1:
        learner.grad_hook = all_reduce_gradients
        torch.manual_seed(learner.config.seed + 1_000_003 * ranks.rank)
    return learner
