r"""Rollout workers on Ray: each a Ray actor holding a Gymnasium vector env and a CPU copy of the
policy; the learner merges their rollouts and runs the same update as in one process.

``Config(workers=W)`` (``logtrick train ENV --workers W``) splits the ``num_envs`` environments
over W actors, ``num_envs / W`` each, with the reset seeds one process would give them: worker
``w`` steps envs ``w E .. (w + 1) E - 1`` of the in-process run. Each iteration
:meth:`RayCollector.collect`

1. puts the policy's ``state_dict`` (weights *and* observation statistics) in the object store
   once (``ray.put``), and every worker loads it;
2. lets every worker collect its ``(T, E)`` :class:`~logtrick.rl.rollout.Rollout` with the
   in-process :class:`~logtrick.rl.rollout.Collector`, acting on those statistics frozen for the
   iteration (:func:`~logtrick.rl.distributed.frozen_obs_stats`);
3. merges them into one ``(T, W E)`` rollout (:func:`merge_rollouts`) and folds its
   observations into the learner's statistics once
   (:func:`~logtrick.rl.distributed.merge_obs_stats`), as one process does with its own rollout.
   The reward scale is the learner's, applied to the merged rollout.

So with a fixed policy the merged rollout holds exactly the transitions of one process with
``W E`` envs and the same seeds, normalisation on or off (``tests/rl/test_ray_workers.py``),
and so do the statistics after it. Action sampling draws from each worker's own stream, seeded
from ``(seed, worker, update, restart)`` (:func:`~logtrick.rl.distributed.stream_seed`), so a
learning run is not bit-identical to the in-process one; a restarted worker and a resumed run
draw fresh streams, the same ones when run again.

Faults (:class:`WorkerFaults`, from the config): a worker whose process dies or that does not
answer within ``worker_timeout_s`` is killed, replaced by a new actor (its envs reset with
fresh seeds) and its share collected again, a warning saying what the restart cost; after
``worker_restarts`` failures in a row the run stops (``worker_failure="stop"``) with the cause
from the worker's own log, or goes on without that worker (``"continue"``). An exception raised
by the env inside a worker stops the run with a :class:`~logtrick.rl.errors.WorkerError` naming
the env, the worker and the step (its traceback in the error's notes). Rollouts of whole
episodes (REINFORCE without a critic) are refused: their lengths differ between workers.
Ray is imported when a :class:`RayCollector` is built (``workers > 0``), not when this module is:
without it, building one raises :class:`~logtrick.rl.MissingExtraError` naming the extra.

References:
    Moritz et al., *Ray: A Distributed Framework for Emerging AI Applications*, OSDI 2018;
    Liang et al., *RLlib: Abstractions for Distributed Reinforcement Learning*, ICML 2018
    (EnvRunner actors, weights broadcast through the object store, restart of failed runners).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from logtrick.rl import distributed
from logtrick.rl.config import Config
from logtrick.rl.distributed import check_data_parallel, frozen_obs_stats, merge_obs_stats, shard
from logtrick.rl.envs import make_env
from logtrick.rl.errors import WorkerError
from logtrick.rl.policies import ActorCritic, build_policy
from logtrick.rl.ray_setup import (
    check_env_for_workers,
    connect,
    env_label,
    import_ray,
    redirect_stderr,
)
from logtrick.rl.rollout import Collector, Rollout

__all__ = ["RayCollector", "RolloutWorker", "WorkerFaults", "merge_rollouts"]


_TIME_MAJOR = ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated",
               "next_values", "valid")  # fmt: skip
_LOG_LINES = 12  # lines of a dead worker's own log quoted in the error


@dataclass(frozen=True)
class WorkerFaults:
    """What the collector does when a worker fails (RLlib: ``sample_timeout_s``,
    ``max_num_env_runner_restarts``, ``ignore_env_runner_failures``)."""

    timeout_s: float = 120.0
    """Seconds a worker may take for one rollout before it is killed and restarted."""
    restarts: int = 3
    """Restarts of one worker in a row (without a rollout in between) before it counts as lost."""
    on_lost: str = "stop"
    """``"stop"``: end the run (the loop keeps the last good checkpoint); ``"continue"``: go on
    with the other workers (fewer envs)."""
    startup_s: float = 300.0
    """Seconds a new worker may take to start (import, build its envs)."""

    @classmethod
    def of(cls, config: Config) -> WorkerFaults:
        """The config's ``worker_timeout_s``, ``worker_restarts`` and ``worker_failure``."""
        return cls(config.worker_timeout_s, config.worker_restarts, config.worker_failure)


class _StepCollector(Collector):
    """The in-process collector, remembering the rollout step it is at (for error messages)."""

    step_at = 0

    def _step(self, t: int) -> None:
        self.step_at = t
        super()._step(t)


class RolloutWorker:
    """What a Ray actor holds: ``E`` envs, a CPU policy and the in-process collector.

    Args:
        config: the run's config as a dict (``Config.to_dict``).
        index: the worker's index ``w``.
        seeds: reset seeds of its ``E = num_envs / workers`` envs.
        update: the update it starts at; with ``restart`` (how many times worker ``w`` was
            restarted) it seeds the worker's action sampling (:func:`~logtrick.rl.distributed.
            stream_seed`).
        log: a file for the worker's stderr (its cause of death, should it die), or ``None``.
        env: what the envs are made from (an id or a factory; default: ``config["env"]``).
    """

    def __init__(self, config: dict[str, Any], index: int, seeds: list[int], update: int = 0,
                 restart: int = 0, log: str | None = None, env: Any = None) -> None:  # fmt: skip
        redirect_stderr(log)
        cfg = Config.from_dict(config)
        torch.set_num_threads(cfg.torch_threads)
        kind = distributed.WORKER_STREAM
        torch.manual_seed(distributed.stream_seed(cfg.seed, kind, index, update, restart))
        source = cfg.env if env is None else env
        self.index, self.env_label = index, env_label(source)
        self.envs = make_env(source, num_envs=len(seeds),
                             vectorization_mode=cfg.vectorization_mode)  # fmt: skip
        self.policy = build_policy(cfg, self.envs)
        self.collector = _StepCollector(self.envs, self.policy, cfg.num_steps)
        self.collector.reset(seed=seeds)

    def collect(self, state: dict[str, torch.Tensor]) -> tuple[Rollout | None, float, str]:
        """Load the learner's weights and statistics, then collect one rollout acting on them;
        returns it, the seconds it took in the worker, and ``""`` — or, when the env raised,
        ``None``, the seconds, and the error with its traceback (the run ends with it)."""
        start = time.perf_counter()
        self.policy.load_state_dict(state)
        try:
            with frozen_obs_stats(self.policy):
                rollout = self.collector.collect()
        except Exception as err:  # the env's (or the user's policy's): reported, not retried
            c = self.collector
            where = (f"env {self.env_label}, worker {self.index}, rollout step {c.step_at} "
                     f"(env step {c.global_step + c.step_at * c.num_envs:,} of this "
                     "worker)")  # fmt: skip
            text = f"{where}: {type(err).__name__}: {err}\n{traceback.format_exc()}"
            return None, time.perf_counter() - start, text
        return rollout, time.perf_counter() - start, ""

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

    Starts a private local Ray runtime when none is running, or joins ``config.ray_address``
    (``"auto"`` or ``"HOST:PORT"``). Each worker reserves one CPU, or an equal share of the
    CPUs still free when there are fewer than workers (a laptop with more workers than cores
    oversubscribes them instead of waiting for ever).

    Args:
        config: the run's config (``workers > 0``; ``num_envs`` a multiple of it).
        policy: the learner's policy: its ``state_dict`` is sent each iteration, its observation
            statistics receive the merged rollouts' observations.
        seeds: reset seeds of all ``num_envs`` envs (worker ``w`` gets its consecutive share).
        update: the update the run is at (a resumed run: its checkpoint's), for the seeds.
        faults: timeouts and restart policy (default: from ``config``).
        env: what the envs are made from: an id or a zero-argument factory (default:
            ``config.env``); a factory is checked to load in a worker before any starts.
    """

    def __init__(self, config: Config, policy: ActorCritic, seeds: list[int], update: int = 0,
                 faults: WorkerFaults | None = None, env: Any = None) -> None:  # fmt: skip
        check_data_parallel(config, config.workers, "workers")
        self.config, self.policy, self.faults = config, policy, faults or WorkerFaults.of(config)
        self._ray_temp = connect(config.ray_address)
        self._logs = Path(tempfile.mkdtemp(prefix="logtrick-workers-"))
        self.workers: dict[int, Any] = {}
        self._pending: tuple[Any, dict[int, Any]] | None = None
        """The next rollout, already started (``config.overlap``)."""
        try:
            self.env = config.env if env is None else env
            check_env_for_workers(self.env)
            self.iteration = update
            self.restarts: list[tuple[int, int, float]] = []
            """``(iteration, worker, seconds)`` of each restart."""
            self.restart_counts = [0] * config.workers
            self.worker_seconds: dict[int, float] = {}
            """Seconds each worker spent on its last rollout, inside the worker (the rest of
            ``collect`` is Ray: sending the weights, the rollouts back, and merging)."""
            self.worker_steps: dict[int, int] = {}
            """Env steps of each worker's last rollout."""
            free = import_ray().available_resources().get("CPU", 0.0)  # absent when all are taken
            cpus = min(1.0, free / config.workers)
            cpus = cpus if cpus >= 0.01 else 0.0  # none free: oversubscribe, never wait
            self._actor = import_ray().remote(num_cpus=cpus, max_restarts=0)(RolloutWorker)
            for w in range(config.workers):
                self.workers[w] = self._start(w, shard(seeds, w, config.workers))
            for w, actor in self.workers.items():
                self._started(w, actor)
        except BaseException:
            self.close()
            raise

    def _start(self, w: int, seeds: list[int]) -> Any:
        log = str(self._logs / f"worker{w}.log")
        return self._actor.remote(self.config.to_dict(), w, seeds, self.iteration,
                                  self.restart_counts[w], log, self.env)  # fmt: skip

    def _started(self, w: int, actor: Any) -> None:
        """Wait for worker ``w`` to start; one that cannot is an error naming its cause."""
        try:
            import_ray().get(actor.pid.remote(), timeout=self.faults.startup_s)
        except import_ray().exceptions.GetTimeoutError:
            raise WorkerError(f"workers: worker {w} did not start within {self.faults.startup_s:g} "
                              "s (import, build its envs)") from None  # fmt: skip
        except import_ray().exceptions.RayActorError as err:
            raise WorkerError(f"workers: worker {w} did not start: {self._cause(w, err)}") from None

    def _dispatch(self) -> tuple[Any, dict[int, Any]]:
        """Send the policy's weights and statistics (once, shared by all workers) and start
        every worker's next rollout."""
        state = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        state_ref = import_ray().put(state)
        return state_ref, {w: actor.collect.remote(state_ref) for w, actor in self.workers.items()}

    def collect(self) -> Rollout:
        """One rollout of every worker, merged; failed or silent workers are restarted. With
        ``config.overlap`` the next rollout is started before returning (on the weights before
        this rollout's update: a policy lag of one update)."""
        lagged = self._pending is not None  # started before the last update: lag 1
        state_ref, refs = self._pending or self._dispatch()
        self._pending = None
        parts = {w: self._result(w, ref, state_ref) for w, ref in refs.items()}
        done = {w: part for w, part in parts.items() if part is not None}
        self.worker_seconds = {w: seconds for w, (_, seconds) in done.items()}
        self.worker_steps = {w: part.rewards.numel() for w, (part, _) in done.items()}
        rollout = merge_rollouts([part for part, _ in done.values()])
        merge_obs_stats(self.policy, rollout.obs)
        self.iteration += 1
        if self.config.overlap:
            self._pending = self._dispatch()
        rollout.policy_lag = int(lagged)
        return rollout

    def _result(self, w: int, ref: Any, state_ref: Any) -> tuple[Rollout, float] | None:
        """Worker ``w``'s rollout, restarting it while it dies or does not answer (``None``:
        given up, the run going on without it)."""
        start, failures = time.perf_counter(), 0
        while True:
            try:
                part, seconds, error = import_ray().get(ref, timeout=self.faults.timeout_s)
            except (
                import_ray().exceptions.RayActorError,
                import_ray().exceptions.GetTimeoutError,
            ) as err:
                failures += 1
                if failures > self.faults.restarts:
                    self._lost(w, failures, self._cause(w, err))
                    return None
                ref = self._restart(w).collect.remote(state_ref)
                continue
            if error:
                first, _, trace = error.partition("\n")
                failure = WorkerError(f"workers: {first}")
                failure.add_note(f"the worker's traceback:\n{trace}")
                raise failure
            if failures:
                self._note(w, failures, time.perf_counter() - start)
            return cast(Rollout, part), seconds

    def metrics(self) -> dict[str, float]:
        """What the run logs of the workers each iteration: steps and seconds of each worker's
        last rollout (NaN for a lost worker), restarts so far, workers still running."""
        row = {"workers_alive": float(len(self.workers)), "worker_restarts": float(sum(
            self.restart_counts))}  # fmt: skip
        for w in range(self.config.workers):
            row[f"worker{w}_steps"] = float(self.worker_steps.get(w, math.nan))
            row[f"worker{w}_seconds"] = self.worker_seconds.get(w, math.nan)
        return row

    def _restart(self, w: int) -> Any:
        """A fresh actor for worker ``w``, its envs reset with seeds of (iteration, restart)."""
        import_ray().kill(self.workers[w], no_restart=True)
        self.restart_counts[w] += 1
        base = distributed.stream_seed(self.config.seed, distributed.WORKER_ENVS, w,
                                       self.iteration, self.restart_counts[w]) % 2**31  # fmt: skip
        envs = self.config.num_envs // self.config.workers
        self.workers[w] = self._start(w, [base + i for i in range(envs)])
        import_ray().wait([self.workers[w].pid.remote()], timeout=self.faults.startup_s)
        return self.workers[w]

    def _cause(self, w: int, err: Exception) -> str:
        """Why worker ``w`` failed: no answer in time, or the end of its own log (else Ray's
        first line)."""
        if isinstance(err, import_ray().exceptions.GetTimeoutError):
            return f"no answer within {self.faults.timeout_s:g} s (worker_timeout_s)"
        path = self._logs / f"worker{w}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        lines = [line for line in lines if line.strip()][-_LOG_LINES:]
        if lines:
            return "its process died; the end of its log: " + " | ".join(lines)
        return f"its process died ({str(err).strip().splitlines()[0] if str(err) else err!r})"

    def _lost(self, w: int, failures: int, cause: str) -> None:
        message = (f"workers: worker {w} failed {failures} times in a row at iteration "
                   f"{self.iteration} (worker_restarts={self.faults.restarts}): "
                   f"{cause}")  # fmt: skip
        if self.faults.on_lost != "continue" or len(self.workers) == 1:
            raise WorkerError(message)
        import_ray().kill(self.workers.pop(w), no_restart=True)
        warnings.warn(f"{message}; going on with {len(self.workers)} workers "
                      "(worker_failure='continue')", RuntimeWarning, stacklevel=4)  # fmt: skip

    def _note(self, w: int, attempts: int, seconds: float) -> None:
        self.restarts.append((self.iteration, w, seconds))
        warnings.warn(
            f"workers: worker {w} died or did not answer within {self.faults.timeout_s:g} s at "
            f"iteration {self.iteration}; restarted {attempts} time(s), its share collected "
            f"again: {seconds:.2f} s lost (its envs start new episodes)",
            RuntimeWarning,
            stacklevel=4,
        )

    def close(self) -> None:
        """Stop the workers, and the Ray runtime if this collector started it (with its agents:
        nothing of it outlives the run)."""
        if import_ray().is_initialized():
            for actor in self.workers.values():
                import_ray().kill(actor, no_restart=True)
        self.workers, self._pending = {}, None
        if self._ray_temp is not None and import_ray().is_initialized():
            import_ray().shutdown()
            shutil.rmtree(self._ray_temp, ignore_errors=True)
            self._ray_temp = None
        shutil.rmtree(self._logs, ignore_errors=True)
