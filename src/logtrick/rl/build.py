"""The construction of a run: its learner (policy and optimizer), collector and target return.

:class:`~logtrick.rl.Agent` assembles a run from these before anything is written; the loop
(:mod:`logtrick.rl.loop`) only runs what they built. The policy itself is built by
:func:`~logtrick.rl.policies.build_policy` (the Ray workers build their copies there too).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from logtrick.rl import distributed
from logtrick.rl.checkpoint import Counters
from logtrick.rl.config import Config
from logtrick.rl.learner import Adam, Learner, RewardScale
from logtrick.rl.overlap import OverlapCollector
from logtrick.rl.policies import ActorCritic, build_policy
from logtrick.rl.rollout import Collector

__all__ = ["make_learner", "new_collector", "reset_seeds", "target_return"]


def target_return(config: Config, env: Any) -> float | None:
    """The return that counts as solved: ``config.target_return``, else the reward threshold
    of ``env`` (an id, instance or factory; ``None`` when it has none)."""
    if config.target_return is not None:
        return config.target_return
    from logtrick.rl.defaults import env_facts  # builds an env: only when asked

    try:
        return env_facts(env).reward_threshold
    except (ValueError, gym.error.Error):
        return None


def make_learner(config: Config, envs: Any, policy: torch.nn.Module | None = None) -> Learner:
    """Seed torch, build the policy (or wrap the user's ``policy``, see
    :class:`~logtrick.rl.module_policy.ModulePolicy`) and its optimizer (npg steps only the
    critic with it)."""
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    if policy is None:
        policy = build_policy(config, envs)
    elif not isinstance(policy, ActorCritic):
        from logtrick.rl.module_policy import ModulePolicy

        policy = ModulePolicy(
            policy, envs.single_observation_space, envs.single_action_space, config
        )
    optimizer = Adam(policy.parameters(), lr=config.lr, eps=1e-5)
    scale = RewardScale(config.gamma) if config.normalize_rewards else None
    generator = torch.Generator().manual_seed(config.seed + 1)
    # ModulePolicy duck-types ActorCritic's learner-facing methods (no shared Protocol yet)
    return Learner(config, policy, optimizer, generator, scale)  # type: ignore[arg-type]


def reset_seeds(config: Config, update_index: int) -> list[int]:
    """Reset seeds of the training envs after checkpoint ``update_index`` (0: the start)."""
    base = config.seed * 1_000_003 + update_index * 7_919
    return [base + i for i in range(config.num_envs)]


def new_collector(learner: Learner, envs: Any, counters: Counters, source: Any = None) -> Any:
    """The collector, its envs reset with the seeds of ``counters.update``: in this process,
    this rank's share of them, or on Ray workers (``config.workers``); each has ``collect()``."""
    config = learner.config
    seeds = reset_seeds(config, counters.update)
    if config.overlap and distributed.ranks_from_env().world > 1:
        raise ValueError(
            "overlap: each torchrun rank's update is a collective with the others; set "
            "overlap=False (or use Ray workers, which overlap with the update)"
        )
    if config.vector_env == "envpool" and config.workers:
        raise ValueError(
            "vector_env: Ray workers step Gymnasium's envs; EnvPool runs in this process only "
            "(workers=0)"
        )
    if config.workers:
        from logtrick.rl.workers import RayCollector  # Ray: MissingExtraError when absent

        return RayCollector(config, learner.policy, seeds, counters.update, env=source)
    ranks = distributed.ranks_from_env()
    device = next(learner.policy.parameters()).device
    collector = Collector(
        envs, learner.policy, config.num_steps, device=device, whole_episodes=config.whole_episodes
    )
    collector.reset(seed=distributed.shard(seeds, ranks.rank, ranks.world))
    if config.overlap:  # a second thread; it hands the statistics back itself
        return OverlapCollector(collector, learner.policy)
    return distributed.RankCollector(collector, learner.policy)  # one policy state per iteration
