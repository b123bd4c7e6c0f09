r"""Rollout workers on Ray: each a Ray actor holding a Gymnasium vector env and a CPU copy of the
policy; the learner merges their rollouts and runs the same update as in one process.

``Config(workers=W)`` (``logtrick train ENV --workers W``) splits the ``num_envs`` environments
over W actors, ``num_envs / W`` each, with the reset seeds one process would give them: worker
``w`` steps envs ``w E .. (w + 1) E - 1`` of the in-process run. Each iteration
:meth:`RayCollector.collect`

1. puts the policy's ``state_dict`` (weights *and* observation statistics) in the object store
   once (``ray.put``), and every worker loads it;
2. lets every worker collect its ``(T, E)`` :class:`~logtrick.rl.rollout.Rollout` with the
   in-process :class:`~logtrick.rl.rollout.Collector`;
3. merges them into one ``(T, W E)`` rollout (:func:`merge_rollouts`) and folds all its
   observations into the learner's statistics at once (moments merged,
   :meth:`~logtrick.rl.policies.ActorCritic.update_obs_stats`).

With a fixed policy the merged rollout holds exactly the transitions of one process with
``W E`` envs and the same seeds (``tests/rl/test_ray_workers.py``). Action sampling draws from each
worker's own random stream, so a learning run is not bit-identical to the in-process one.

Faults: a worker whose process dies (``RayActorError``) or that does not answer within
``timeout_s`` is killed, replaced by a new actor (its envs reset with fresh seeds derived from
the iteration) and its share collected again; a warning says what the restart cost. Rollouts of
whole episodes (REINFORCE without a critic) are refused: their lengths differ between workers.
Ray is imported when a :class:`RayCollector` is built (``workers > 0``), not when this module is:
without it, building one raises :class:`~logtrick.rl.MissingExtraError` naming the extra.

References:
    Moritz et al., *Ray: A Distributed Framework for Emerging AI Applications*, OSDI 2018;
    Liang et al., *RLlib: Abstractions for Distributed Reinforcement Learning*, ICML 2018
    (EnvRunner actors, weights broadcast through the object store, restart of failed runners).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, cast

import torch

from logtrick.rl.config import Config
from logtrick.rl.distributed import check_data_parallel, shard
from logtrick.rl.envs import make_env
from logtrick.rl.errors import MissingExtraError
from logtrick.rl.policies import ActorCritic, build_policy
from logtrick.rl.rollout import Collector, Rollout

__all__ = ["RayCollector", "RolloutWorker", "merge_rollouts"]


def import_ray() -> Any:
    """Ray, imported on first use so that this module imports without the extra."""
    try:
        import ray
    except ImportError as err:
        raise MissingExtraError(
            f"workers: Ray workers need Ray ({err}); install it with "
            "`pip install 'logtrick[distributed]'`"
        ) from err
    return ray


_TIME_MAJOR = (
    "obs",
    "actions",
    "log_probs",
    "values",
    "rewards",
    "terminated",
    "truncated",
    "next_values",
    "valid",
)


class RolloutWorker:
    """What a Ray actor holds: ``E`` envs, a CPU policy and the in-process collector.

    Args:
        config: the run's config as a dict (``Config.to_dict``).
        index: the worker's index ``w``; its action sampling is seeded with ``seed + w + 1``
            (the learner's stream is ``seed``).
        seeds: reset seeds of its ``E = num_envs / workers`` envs.
    """

    def __init__(self, config: dict[str, Any], index: int, seeds: list[int]) -> None:
        cfg = Config.from_dict(config)
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed + 1_000_003 * (index + 1))
        self.envs = make_env(
            cfg.env, num_envs=len(seeds), vectorization_mode=cfg.vectorization_mode
        )
        self.policy = build_policy(cfg, self.envs)
        self.collector = Collector(self.envs, self.policy, cfg.num_steps)
        self.collector.reset(seed=seeds)

    def collect(self, state: dict[str, torch.Tensor]) -> tuple[Rollout, float]:
        """Load the learner's weights and statistics, then collect one rollout; returns it and
        the seconds it took in the worker."""
        start = time.perf_counter()
        self.policy.load_state_dict(state)
        return self.collector.collect(), time.perf_counter() - start

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()


def merge_rollouts(parts: list[Rollout]) -> Rollout:
    """``W`` rollouts of ``(T, E)`` as one ``(T, W E)`` rollout: envs side by side, in worker order.

    The bootstrap indices ``t E + e`` of worker ``w`` become ``t W E + w E + e``; episode
    statistics are listed worker by worker.
    """
    rows, envs = parts[0].rewards.shape
    if any(p.rewards.shape != (rows, envs) for p in parts):
        shapes = [tuple(p.rewards.shape) for p in parts]
        raise ValueError(f"rollouts: expected equal (T, E) shapes to merge, got {shapes}")
    width = envs * len(parts)
    index = []
    for w, p in enumerate(parts):
        t, e = p.bootstrap_index // envs, p.bootstrap_index % envs
        index.append(t * width + w * envs + e)
    return Rollout(
        **{k: torch.cat([getattr(p, k) for p in parts], 1) for k in _TIME_MAJOR},
        bootstrap_obs=torch.cat([p.bootstrap_obs for p in parts]),
        bootstrap_index=torch.cat(index),
        action_masks=None
        if parts[0].action_masks is None
        else torch.cat([cast(torch.Tensor, p.action_masks) for p in parts], 1),  # all have, or none
        episode_returns=[r for p in parts for r in p.episode_returns],
        episode_lengths=[n for p in parts for n in p.episode_lengths],
    )


class RayCollector:
    """Collect on ``config.workers`` Ray actors; ``collect()`` like the in-process collector.

    Starts a local Ray runtime when none is running (``ray.init()``), or joins
    ``config.ray_address`` (``"auto"`` or ``"HOST:PORT"``). Each worker reserves one CPU, or
    an equal share of the CPUs still free when there are fewer than workers (a laptop with more
    workers than cores oversubscribes them instead of waiting for ever).

    Args:
        config: the run's config (``workers > 0``; ``num_envs`` a multiple of it).
        policy: the learner's policy: its ``state_dict`` is sent each iteration, its observation
            statistics receive the merged rollouts' observations.
        seeds: reset seeds of all ``num_envs`` envs (worker ``w`` gets its consecutive share).
        timeout_s: seconds a worker may take for one rollout before it is restarted.
        startup_s: seconds a new worker may take to start (import, build its envs).
        max_restarts: restarts of one worker's share within one iteration before giving up.
    """

    def __init__(
        self,
        config: Config,
        policy: ActorCritic,
        seeds: list[int],
        timeout_s: float = 120.0,
        max_restarts: int = 3,
        startup_s: float = 300.0,
    ) -> None:
        check_data_parallel(config, config.workers, "workers")
        self.ray = ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
        self.config, self.policy, self.seeds = config, policy, seeds
        self.timeout_s, self.max_restarts, self.startup_s = timeout_s, max_restarts, startup_s
        self.iteration = 0
        self.restarts: list[tuple[int, int, float]] = []
        """``(iteration, worker, seconds)`` of each restart."""
        self.worker_seconds: list[float] = []
        """Seconds each worker spent on its last rollout, inside the worker (the rest of
        ``collect`` is Ray: sending the weights, the rollouts back, and merging)."""
        free = ray.available_resources().get("CPU", 1.0)
        cpus = min(1.0, max(free, 0.01) / config.workers)
        self._actor = ray.remote(num_cpus=cpus, max_restarts=0)(RolloutWorker)
        self.workers = [self._start(w, seeds) for w in range(config.workers)]
        ray.get([w.pid.remote() for w in self.workers], timeout=startup_s)  # all started

    def _start(self, w: int, seeds: list[int]) -> Any:
        mine = shard(seeds, w, self.config.workers)
        return self._actor.remote(self.config.to_dict(), w, mine)

    def collect(self) -> Rollout:
        """One rollout of every worker, merged; failed or silent workers are restarted."""
        state = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        ray = self.ray
        state_ref = ray.put(state)  # once per iteration, shared by all workers
        refs = [w.collect.remote(state_ref) for w in self.workers]
        results = [self._result(w, ref, state_ref) for w, ref in enumerate(refs)]
        self.worker_seconds = [seconds for _, seconds in results]
        rollout = merge_rollouts([part for part, _ in results])
        self.policy.update_obs_stats(rollout.obs.to(self.policy.obs_mean.device))
        self.iteration += 1
        return rollout

    def _result(self, w: int, ref: Any, state_ref: Any) -> tuple[Rollout, float]:
        """Worker ``w``'s rollout, restarting it while it fails or does not answer."""
        ray, start = self.ray, time.perf_counter()
        for attempt in range(self.max_restarts + 1):
            if attempt:  # a fresh actor, its envs reset with seeds of this iteration
                ray.kill(self.workers[w], no_restart=True)
                seeds = [s + 15_485_863 * (self.iteration + attempt) for s in self.seeds]
                self.workers[w] = self._start(w, seeds)
                ray.wait([self.workers[w].pid.remote()], timeout=self.startup_s)  # started
                ref = self.workers[w].collect.remote(state_ref)
            done, _ = ray.wait([ref], timeout=self.timeout_s)
            if done:
                try:
                    part = ray.get(ref)
                except ray.exceptions.RayActorError:
                    continue
                if attempt:
                    self._note(w, attempt, time.perf_counter() - start)
                return part
        raise RuntimeError(
            f"workers: worker {w} failed {self.max_restarts + 1} times in a row "
            f"at iteration {self.iteration}; see the Ray logs"
        )

    def _note(self, w: int, attempts: int, seconds: float) -> None:
        self.restarts.append((self.iteration, w, seconds))
        warnings.warn(
            f"workers: worker {w} died or did not answer within {self.timeout_s:g} s at "
            f"iteration {self.iteration}; restarted {attempts} time(s), its share collected "
            f"again: {seconds:.2f} s lost (its envs start new episodes)",
            RuntimeWarning,
            stacklevel=3,
        )

    def close(self) -> None:
        """Stop the workers (the Ray runtime stays up for the caller)."""
        for w in self.workers:
            self.ray.kill(w, no_restart=True)
        self.workers = []
