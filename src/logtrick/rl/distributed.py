r"""The learner across processes: DD-PPO-style data parallelism on ``torch.distributed``.

``torchrun --nproc-per-node N -m logtrick train ...`` starts N ranks (detected from
``WORLD_SIZE``). Every rank steps its own share of the ``num_envs`` environments (reset seeds
offset by rank, so N ranks together step exactly the envs of one process with ``num_envs``),
computes the update on its own rollout, and whatever the ranks must agree on is averaged
over them, weighted by each rank's number of transitions :math:`n_r`
(:func:`mean_over_ranks`, one flattened buffer per call):

.. math::  g \leftarrow \frac{\sum_r n_r g_r}{\sum_r n_r}

the gradient before every optimizer step (reinforce, a2c, ppo's minibatches, npg's critic);
npg's policy gradient, each Fisher-vector product of its conjugate gradient, and its line
search's KL and surrogate (:func:`~logtrick.rl.npg.natural_gradient`, ``reduce``); ppo's mean KL
for ``target_kl``. Each is what one process computes on the concatenated batch, so the
parameters, the CG iterations and every early stop are identical on every rank. One policy
state: each rollout is collected under the statistics every rank shares, then the observation
moments of all ranks are merged once (:func:`merge_obs_stats`), as are the reward scale's
(:class:`~logtrick.rl.learner.RewardScale`, pooled moments). Episode statistics are gathered
from every rank; only rank 0 writes the run directory and evaluates. Rollouts of whole episodes
(reinforce without a critic) take different numbers of steps per rank; the step counter is
summed over the ranks. Backend: gloo on CPU, nccl on GPU.

What differs from one process with all the envs: advantage normalisation, the ``"mean"``
baseline and the minibatch split are per rank (as in DD-PPO).

References:
    Wijmans et al., *DD-PPO: Learning Near-Perfect PointGoal Navigators from 2.5 Billion
    Frames*, ICLR 2020.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from logtrick.collective import all_reduce_sum, is_distributed, pooled_moments
from logtrick.rl.config import Config
from logtrick.rl.errors import RankError
from logtrick.rl.learner import Learner
from logtrick.rl.policies import ActorCritic

__all__ = [
    "RankCollector",
    "Ranks",
    "any_rank",
    "check_data_parallel",
    "from_rank0",
    "frozen_obs_stats",
    "global_steps",
    "init_ranks",
    "learner_device",
    "local_envs",
    "mean_over_ranks",
    "merge_obs_stats",
    "place",
    "shard",
    "stream_seed",
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
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                 int(env.get("LOCAL_RANK", 0)))  # fmt: skip


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
        raise ValueError(f"num_envs: {config.num_envs} envs cannot be split evenly over "
                         f"{parts} {what}; use a multiple of {parts}")  # fmt: skip
    if config.whole_episodes and what == "workers":
        raise ValueError(f"algo: {config.algo} without a critic collects whole episodes, whose "
                         f"lengths differ between {what}; use baseline='value'")  # fmt: skip


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
        timeout = datetime.timedelta(seconds=config.dist_timeout_s)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    check_same_config(config)
    return ranks


def check_same_config(config: Config) -> None:
    """Refuse, on every rank, a configuration that differs between the ranks (another seed,
    learning rate or network size would train on silently, or hang in a collective): every
    rank gathers every rank's config and names the first field that differs."""
    mine = {k: repr(v) for k, v in config.to_dict().items()}
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, mine)
    for rank, theirs in enumerate(parts[1:], 1):
        differ = [k for k in parts[0] if parts[0][k] != theirs.get(k)]
        if differ:
            k = differ[0]
            raise ValueError(
                f"{k}: the torchrun ranks run different configurations: rank 0 has {k}="
                f"{parts[0][k]}, rank {rank} has {k}={theirs.get(k)} (differing: "
                f"{', '.join(differ)}); start every rank with the same arguments"
            )


def shard(seeds: list[int], index: int, parts: int) -> list[int]:
    """Part ``index`` of ``parts`` equal consecutive parts of ``seeds`` (one rank's or one
    worker's envs: together they are the envs of one process)."""
    size = len(seeds) // parts
    return seeds[index * size : (index + 1) * size]


def mean_over_ranks(tensors: list[Tensor], weight: float) -> list[Tensor]:
    r"""The weighted means :math:`\sum_r w_r x_r / \sum_r w_r` over the ranks, in one
    all-reduce; the inputs themselves in one process.

    With ``w_r`` the number of transitions a rank's mean loss averages over, the mean of the
    ranks' gradients (or Fisher-vector products, KLs, surrogates) is the one of one process on
    the concatenated batch. Every rank must call it the same number of times, same shapes.
    """
    if not is_distributed(default=True) or not tensors:
        return tensors
    w = torch.full((1,), float(weight), dtype=tensors[0].dtype, device=tensors[0].device)
    *summed, total = all_reduce_sum([t * w for t in tensors] + [w], default=True)
    return [t / total.clamp(min=1e-30) for t in summed]


def merge_obs_stats(policy: ActorCritic, obs: Tensor) -> None:
    r"""Fold one iteration's observations, of every rank, into the statistics once.

    The rollout was collected under frozen statistics (:func:`frozen_obs_stats`); its
    observation moments are pooled over the ranks (:func:`~logtrick.collective.pooled_moments`,
    Chan et al. 1979) and merged into the statistics every rank shares
    (:func:`~logtrick.rl.policies.merge_moments`): every rank, and one process with all the
    envs, ends with the same statistics. ``obs``: ``(T, B, *obs_shape)``.
    """
    if not getattr(policy, "normalize_obs", False):
        return
    n, mean, var = pooled_moments(policy.obs_features(obs))
    if n:
        policy.fold_obs_moments(n, mean, var)


@contextmanager
def frozen_obs_stats(policy: Any) -> Iterator[None]:
    """Act on the statistics as they are for the whole rollout (the collector's per-step
    updates do nothing meanwhile): every worker and rank acts on the learner's statistics."""
    before = getattr(policy, "obs_stats_frozen", False)
    policy.obs_stats_frozen = True
    try:
        yield
    finally:
        policy.obs_stats_frozen = before


def obs_stats(policy: ActorCritic) -> tuple[Tensor, Tensor, Tensor]:
    """A copy of the policy's ``(count, mean, var)`` observation statistics."""
    return policy.obs_count.clone(), policy.obs_mean.clone(), policy.obs_var.clone()


class RankCollector:
    """One policy state per iteration: the in-process collector's rollout collected under frozen
    observation statistics, then its observations folded in once, pooled over the ranks; the
    episode statistics of every rank gathered into the rollout (what is logged is all ranks').

    Wraps the in-process :class:`~logtrick.rl.rollout.Collector` (same ``collect()``); used with
    one process too, so that one process and N ranks (or W Ray workers) act alike.
    """

    def __init__(self, collector: Any, policy: ActorCritic) -> None:
        self.collector, self.policy = collector, policy

    def collect(self) -> Any:
        with frozen_obs_stats(self.policy):
            rollout = self.collector.collect()
        merge_obs_stats(self.policy, rollout.obs)
        return gather_episodes(rollout)


def gather_episodes(rollout: Any) -> Any:
    """``rollout`` with the episode returns and lengths of every rank (rank order)."""
    if not is_distributed(default=True):
        return rollout
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, (rollout.episode_returns, rollout.episode_lengths))
    return dataclasses.replace(rollout, episode_returns=[r for p in parts for r in p[0]],
                               episode_lengths=[n for p in parts for n in p[1]])  # fmt: skip


def is_rank_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank died or hung."""
    if not is_distributed(default=True) or not isinstance(err, RuntimeError):
        return False
    text = str(err).lower()
    words = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket")
    return isinstance(err, torch.distributed.DistError) or any(w in text for w in words)


def rank_failed(err: BaseException, update: int, saved_at: int) -> RankError:
    """The one-line error a rank ends with when another rank died or hung."""
    rank = torch.distributed.get_rank()
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), repr(err))
    kept = f"the checkpoint of update {saved_at}" if saved_at else "no checkpoint (none was due)"
    return RankError(f"rank {rank}: another rank died or did not answer (dist_timeout_s) "
                     f"during update {update + 1}: {first[:200]}; the run directory keeps "
                     f"{kept}")  # fmt: skip


def from_rank0(value: float) -> float:
    """Rank 0's ``value`` on every rank (what only rank 0 computed, e.g. the evaluation)."""
    if not is_distributed(default=True):
        return value
    mine = value if torch.distributed.get_rank() == 0 else 0.0
    return float(all_reduce_sum([torch.tensor([mine], dtype=torch.float64)], default=True)[0])


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (the ranks must stop at the same update)."""
    if not is_distributed(default=True):
        return flag
    return bool(all_reduce_sum([torch.tensor([float(flag)])], default=True)[0] > 0)


def global_steps(rollout: Any) -> int:
    """Env steps of the rollout summed over the ranks (whole-episode rollouts differ in length)."""
    steps = torch.tensor([float(rollout.rewards.numel())])
    return int(all_reduce_sum([steps], default=True)[0])


def stream_seed(seed: int, kind: int, member: int, update: int, restart: int = 0) -> int:
    """A seed for the random stream of ``member`` (a rank or worker; ``kind`` tells which
    stream: :data:`RANK_STREAM`, :data:`WORKER_STREAM`, :data:`WORKER_ENVS`) from update
    ``update`` on, after ``restart`` restarts: a restarted worker and a resumed run draw fresh
    streams, and the same ones when run again."""
    entropy = [int(seed) % 2**63, kind, member, update, restart]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


RANK_STREAM, WORKER_STREAM, WORKER_ENVS = 1, 2, 3
"""``kind`` of :func:`stream_seed`: a rank's action sampling, a worker's action sampling, a
restarted worker's env reset seeds."""


def local_envs(config: Config, ranks: Ranks) -> int:
    """Envs stepped in this process: its rank's share, or one (for the spaces) with workers."""
    if config.workers and ranks.world > 1:
        raise ValueError(f"workers: Ray workers ({config.workers}) and torchrun ranks "
                         f"({ranks.world}) cannot be combined; use one of them")  # fmt: skip
    return 1 if config.workers else config.num_envs // ranks.world


def place(learner: Learner, ranks: Ranks) -> Learner:
    """Move the learner to ``config.device``; across ranks, average the gradients (and what
    else an update must agree on) over the ranks and give each rank its own action-sampling
    stream (the weights start equal)."""
    learner.policy.to(learner_device(learner.config, ranks))
    if ranks.world > 1:
        learner.reduce = mean_over_ranks
        seed_rank(learner.config, ranks, 0)
    return learner


def seed_rank(config: Config, ranks: Ranks, update: int) -> None:
    """The action-sampling stream of a rank > 0 from ``update`` on (rank 0's is the one
    process's stream, which a checkpoint restores)."""
    if ranks.rank:
        torch.manual_seed(stream_seed(config.seed, RANK_STREAM, ranks.rank, update))
