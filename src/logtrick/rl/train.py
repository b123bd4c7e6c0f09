r"""The algorithm: sample trajectories, compute the policy gradient, update the policy.

One flat loop serves ``reinforce``, ``a2c``, ``ppo`` and ``npg``: collect a rollout
(:class:`~logtrick.rl.rollout.Collector`), update (:func:`~logtrick.rl.update.update`, where the
algorithms differ), log, evaluate, checkpoint. Shapes: rollouts are time-major, ``(T, B)`` =
``(num_steps, num_envs)``.

Nothing is lost and nothing fails silently:

* a config is checked when it is made, and the envs, policy and collector are built before the
  run directory is created, so bad input leaves nothing behind;
* one process writes a run directory at a time (:func:`~logtrick.runs.lock_run_dir`);
* an update that produces NaN or inf stops the run with a
  :class:`~logtrick.errors.DivergenceError` before anything of it is logged or saved: the last
  checkpoint stays the last good one;
* a resumed run continues its learner exactly (weights, optimizer, random generators,
  observation and reward statistics, learning-rate schedule) and refuses settings that
  contradict its saved config (:data:`~logtrick.rl.config.RESUME_FIELDS` may change). The
  environments' mid-episode state cannot be saved safely (checkpoints hold tensors and numbers
  only), so checkpoints leave the envs running and a resume resets them with seeds derived from
  ``(seed, update)``: resuming one checkpoint twice gives the same run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logtrick import runs
from logtrick.checks import check_env_id
from logtrick.collective import world_size
from logtrick.errors import DivergenceError
from logtrick.rl import distributed
from logtrick.rl.checkpoint import (
    Counters,
    checkpoint_state,
    load_config,
    load_policy_state,
    merge_config,
    restore,
)
from logtrick.rl.config import Config
from logtrick.rl.learner import Learner, RewardScale
from logtrick.rl.policies import ActorCritic
from logtrick.rl.rollout import Collector, make_env
from logtrick.rl.update import update

__all__ = ["TrainResult", "evaluate", "load", "load_config", "train"]


@dataclass
class TrainResult:
    """What ``train`` returns."""

    policy: ActorCritic
    history: list[dict[str, float]]
    run_dir: Path
    solved_at_step: int | None = None
    """First env step at which an evaluation reached the target return (``None``: never)."""
    solved_at_time: float | None = None
    """Training wall-clock (s, evaluation excluded) at that evaluation."""
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def build_policy(config: Config, env: Any) -> ActorCritic:
    return ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        hidden=config.hidden,
        activation=config.activation,
        critic=config.uses_critic,
        normalize_obs=config.normalize_obs,
        log_std_init=config.log_std_init,
    )


def _target(config: Config) -> float | None:
    if config.target_return is not None:
        return config.target_return
    try:
        return check_env_id("env", config.env).reward_threshold
    except ValueError:
        return None


def evaluate(
    policy: ActorCritic,
    env: Any,
    episodes: int = 20,
    seed: int = 0,
    deterministic: bool = True,
) -> tuple[float, float]:
    """Mean and std of the returns of ``episodes`` episodes (reset seeds ``seed + i``).

    Runs the episodes in one vector env of ``episodes`` copies, each stopped after its first
    episode. ``env`` is an env id or a zero-argument env factory.
    """
    if episodes <= 0:
        raise ValueError(f"episodes: expected a positive int, got {episodes!r}")
    envs = make_env(env, num_envs=episodes, vectorization_mode="sync")
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        totals = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            action = policy.act(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = envs.step(action)
            totals += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return float(totals.mean()), float(totals.std())


def _reset_seeds(config: Config, update_index: int) -> list[int]:
    """Reset seeds of the training envs after checkpoint ``update_index`` (0: the start)."""
    base = config.seed * 1_000_003 + update_index * 7_919
    return [base + i for i in range(config.num_envs)]


def _progress(config: Config) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{config.env} {config.algo}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[sps]:>6} steps/s"),
        TextColumn("return {task.fields[ret]:>8}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not config.progress,
    )


class _StopFlag:
    """First Ctrl-C asks the loop to stop at the end of the current update; a second one raises."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __enter__(self) -> _StopFlag:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self.previous = None
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def make_learner(config: Config, envs: Any) -> Learner:
    """Seed torch, build the policy and its optimizer (npg steps only the critic with it)."""
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    policy = build_policy(config, envs)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, eps=1e-5, fused=True)
    scale = RewardScale(config.gamma) if config.normalize_rewards else None
    return Learner(config, policy, optimizer, torch.Generator().manual_seed(config.seed + 1), scale)


def train(config: Config | None = None, resume: str | Path | None = None) -> TrainResult:
    """Train a policy as ``config`` says; see :class:`Config`.

    ``resume`` continues the run in that directory from its last checkpoint. ``config`` may then
    be omitted (the saved config is used) or differ from the saved one only in
    :data:`~logtrick.rl.config.RESUME_FIELDS` (e.g. a larger ``total_steps`` extends the run);
    anything else is a ``ValueError``. A first Ctrl-C stops at the end of the current update and
    writes a checkpoint.

    Raises:
        ValueError: bad or conflicting settings, unknown env id (before anything is written).
        UnsupportedSpaceError: an observation or action space the policy cannot handle.
        RunLockedError: another process is writing to the run directory.
        CheckpointError: ``resume`` has no usable checkpoint.
        DivergenceError: the loss, a gradient or the parameters became NaN or inf.
    """
    if resume is not None:
        return _resume(Path(resume), config)
    config = config or Config()
    ranks = distributed.init_ranks(config)
    envs = make_env(config.env, num_envs=distributed.local_envs(config, ranks),
                    vectorization_mode=config.vectorization_mode)  # fmt: skip
    collector = None
    try:
        learner = distributed.place(make_learner(config, envs), ranks)
        counters = Counters.start(config)
        collector = _collector(config, envs, learner, counters)
        if not ranks.writer:  # only rank 0 writes the run directory
            with tempfile.TemporaryDirectory() as scratch:
                return _run(learner, collector, counters, Path(scratch), resumed=False)
        run_dir = runs.new_run_dir(config.out, config.name)
        with runs.lock_run_dir(run_dir):
            runs.write_config(run_dir, config.to_dict())
            return _run(learner, collector, counters, run_dir, resumed=False)
    finally:
        getattr(collector, "close", lambda: None)()
        envs.close()


def _resume(run_dir: Path, config: Config | None) -> TrainResult:
    saved = load_config(run_dir)
    config = saved if config is None else merge_config(saved, config, run_dir)
    ranks = distributed.ranks_from_env()  # ranks > 0 read the checkpoint, write nothing there
    with runs.lock_run_dir(run_dir) if ranks.writer else contextlib.nullcontext():
        state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
        ranks = distributed.init_ranks(config)
        envs = make_env(config.env, num_envs=distributed.local_envs(config, ranks),
                        vectorization_mode=config.vectorization_mode)  # fmt: skip
        collector = None
        try:
            learner = distributed.place(make_learner(config, envs), ranks)
            counters = restore(learner, state)
            if ranks.rank:  # restore set rank 0's sampling stream
                torch.manual_seed(config.seed + 1_000_003 * ranks.rank + counters.update)
            if config.total_steps < counters.global_step:
                raise ValueError(f"total_steps: {config.total_steps:,} is below the "
                                 f"{counters.global_step:,} steps the run has taken")  # fmt: skip
            counters.extend(saved, config)
            if learner.reward_scale is not None:  # the envs are reset: new episodes
                learner.reward_scale.new_episodes()
            collector = _collector(config, envs, learner, counters)
            if not ranks.writer:
                with tempfile.TemporaryDirectory() as scratch:
                    return _run(learner, collector, counters, Path(scratch), resumed=False)
            if config != saved:
                runs.write_config(run_dir, config.to_dict())
            return _run(learner, collector, counters, run_dir, resumed=True)
        finally:
            getattr(collector, "close", lambda: None)()
            envs.close()


def _collector(config: Config, envs: Any, learner: Learner, counters: Counters) -> Any:
    """The collector, its envs reset with the seeds of ``counters.update``: in this process,
    this rank's share of them, or on Ray workers (``config.workers``); each has ``collect()``."""
    seeds = _reset_seeds(config, counters.update)
    if config.workers:
        try:
            from logtrick.rl.workers import RayCollector  # Ray is imported only here
        except ImportError as err:
            raise ValueError(f"workers: {config.workers} Ray workers need Ray ({err}); "
                             "pip install 'logtrick[distributed]'") from err  # fmt: skip
        return RayCollector(config, learner.policy, seeds)
    ranks = distributed.ranks_from_env()
    device = learner.policy.obs_mean.device
    collector = Collector(envs, learner.policy, config.num_steps, device=device,
                          whole_episodes=config.whole_episodes)  # fmt: skip
    collector.reset(seed=distributed.shard(seeds, ranks.rank, ranks.world))
    if ranks.world > 1:
        return distributed.RankCollector(collector, learner.policy)
    return collector


def _run(
    learner: Learner, collector: Collector, counters: Counters, run_dir: Path, resumed: bool
) -> TrainResult:
    """The loop with its logger, then the plot; the run directory is locked by the caller."""
    config = learner.config
    keep = counters.update if resumed else None
    logger = runs.MetricsLogger(run_dir, config.tensorboard, keep_until=keep)
    history = [_floats(r) for r in runs.read_metrics(logger.path)] if resumed else []
    try:
        interrupted = _loop(learner, collector, logger, history, counters, run_dir)
    finally:
        logger.close()
    if config.plot:
        runs.plot_learning_curve(history, run_dir / runs.CURVE, title=config.name)
    solved = counters.solved_at_step >= 0
    return TrainResult(learner.policy, history, run_dir,
                       counters.solved_at_step if solved else None,
                       counters.solved_at_time if solved else None, interrupted)  # fmt: skip


def _floats(row: dict[str, str]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if v != ""}


def _loop(
    learner: Learner, collector: Collector, logger: runs.MetricsLogger,
    history: list[dict[str, float]], c: Counters, run_dir: Path,
) -> bool:  # fmt: skip
    """Collect, update, log, evaluate, checkpoint; returns whether a Ctrl-C stopped it."""
    config = learner.config
    target, saved_at = _target(config), c.update
    recent = deque(c.recent, maxlen=20)
    with _StopFlag() as stop, _progress(config) as bar:
        task = bar.add_task("train", total=config.total_steps, completed=c.global_step,
                            sps="-", ret="-")  # fmt: skip
        while not _finished(config, c):
            lr = c.lr(config)
            for group in learner.optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            ro = collector.collect()
            steps = ro.rewards.numel() * world_size()  # summed over the ranks
            try:
                info = update(learner, ro)
            except DivergenceError as err:
                raise _diverged(config, c, steps, saved_at, err) from None
            dt = time.perf_counter() - t0
            c.update, c.global_step, c.train_time = (
                c.update + 1, c.global_step + steps, c.train_time + dt)  # fmt: skip
            recent.extend(zip(ro.episode_returns, ro.episode_lengths))
            c.recent = list(recent)
            row = {"update": c.update, "global_step": c.global_step, "time": c.train_time,
                   "sps": steps / dt, "lr": lr,
                   "episode_return": float(np.mean([r for r, _ in recent])) if recent else math.nan,
                   "episode_length": float(np.mean([n for _, n in recent])) if recent else math.nan,
                   "eval_return": _maybe_evaluate(learner, c, target, steps), **info}  # fmt: skip
            logger.log(row)
            history.append(row)
            bar.update(task, completed=c.global_step, sps=f"{row['sps']:.0f}",
                       ret=f"{row['episode_return']:.1f}")  # fmt: skip
            done = stop.requested or _finished(config, c)
            if done or c.update % config.checkpoint_interval == 0:
                runs.save_checkpoint(run_dir / runs.CHECKPOINT, checkpoint_state(learner, c))
                saved_at = c.update
            if done:
                break
    return stop.requested


def _finished(config: Config, c: Counters) -> bool:
    return c.global_step >= config.total_steps or (
        config.stop_at_threshold and c.solved_at_step >= 0
    )


def _diverged(
    config: Config, c: Counters, steps: int, saved_at: int, err: DivergenceError
) -> DivergenceError:
    """The divergence error with where it happened and what the run directory keeps."""
    kept = f"the checkpoint of update {saved_at}" if saved_at else "no checkpoint (none was due)"
    return DivergenceError(
        f"{config.name}: training diverged at update {c.update + 1} (env step "
        f"{c.global_step + steps:,}): {err}. The run directory keeps {kept}."
    )


def _maybe_evaluate(learner: Learner, c: Counters, target: float | None, steps: int) -> float:
    """Evaluate when ``global_step`` crossed a multiple of ``eval_every``; record solving."""
    every = learner.config.eval_every
    if not every or c.global_step // every == (c.global_step - steps) // every:
        return math.nan
    config = learner.config
    mean, _ = evaluate(learner.policy, config.env, config.eval_episodes, seed=config.seed + 10_000)
    if target is not None and mean >= target and c.solved_at_step < 0:
        c.solved_at_step, c.solved_at_time = c.global_step, c.train_time
    return mean


def load(run_dir: str | Path) -> ActorCritic:
    """The policy saved in ``run_dir`` (built from its ``config.json``, weights loaded safely).

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json``.
        CheckpointError: no usable checkpoint, or one that does not fit the config's policy.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    envs = make_env(config.env, num_envs=1, vectorization_mode="sync")
    try:
        policy = build_policy(config, envs)
    finally:
        envs.close()
    load_policy_state(policy, state, config)
    policy.eval()
    return policy
