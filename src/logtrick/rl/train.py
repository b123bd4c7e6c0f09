r"""The algorithm: sample trajectories, compute the policy gradient, update the policy.

One flat loop serves ``reinforce``, ``a2c``, ``ppo`` and ``npg``: collect a rollout
(:class:`~logtrick.rl.rollout.Collector`), update (:func:`~logtrick.rl.update.update`, where the
algorithms differ), log, evaluate, checkpoint. Shapes: rollouts are time-major, ``(T, B)`` =
``(num_steps, num_envs)``.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logtrick import logging as runlog
from logtrick.rl.config import Config
from logtrick.rl.policies import ActorCritic
from logtrick.rl.rollout import Collector, make_env
from logtrick.rl.update import Learner, RewardScale, update

__all__ = ["TrainResult", "evaluate", "load", "train"]


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
    import gymnasium as gym

    try:
        return gym.spec(config.env).reward_threshold
    except Exception:
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
    learner.policy.load_state_dict(state["policy"])
    learner.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    learner.generator.set_state(state["generator"])
    if learner.reward_scale is not None:
        learner.reward_scale.load_state_dict(state["reward_scale"])
    return Counters(**state["counters"])


def make_learner(config: Config, envs: Any) -> Learner:
    """Seed torch, build the policy and its optimizer (npg: the critic's only)."""
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    policy = build_policy(config, envs)
    params = policy.critic_parameters() if config.algo == "npg" else policy.parameters()
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=1e-5, fused=True)
    scale = RewardScale(config.gamma) if config.normalize_rewards else None
    return Learner(config, policy, optimizer, torch.Generator().manual_seed(config.seed + 1), scale)


def train(config: Config | None = None, resume: str | Path | None = None) -> TrainResult:
    """Train a policy as ``config`` says; see :class:`Config`.

    ``resume`` continues the run in that directory from its last checkpoint, with its saved
    config (``total_steps`` taken from ``config`` when given, so a finished run can be extended).
    A first Ctrl-C stops at the end of the current update and writes a checkpoint.
    """
    state = None
    if resume is not None:
        run_dir = Path(resume)
        saved = runlog.read_config(run_dir)
        if config is not None:
            saved["total_steps"] = config.total_steps
        config = Config.from_dict(saved)
        state = runlog.load_checkpoint(run_dir / runlog.CHECKPOINT)
    else:
        config = config or Config()
    envs = make_env(config.env, num_envs=config.num_envs,
                    vectorization_mode=config.vectorization_mode)  # fmt: skip
    learner = make_learner(config, envs)
    if state is not None:
        counters = restore(learner, state)
    else:
        counters = Counters()
        run_dir = runlog.new_run_dir(config.out, config.name)
        runlog.write_config(run_dir, config.to_dict())
    collector = Collector(envs, learner.policy, config.num_steps)
    collector.reset(seed=_reset_seeds(config, counters.update))
    keep = counters.update if state is not None else None
    logger = runlog.MetricsLogger(run_dir, config.tensorboard, keep_until=keep)
    history = [_floats(r) for r in runlog.read_metrics(logger.path)] if keep else []
    try:
        interrupted = _loop(learner, collector, logger, history, counters, run_dir)
    finally:
        logger.close()
        envs.close()
    if config.plot:
        runlog.plot_learning_curve(history, run_dir / runlog.CURVE, title=config.name)
    solved = counters.solved_at_step >= 0
    return TrainResult(learner.policy, history, run_dir,
                       counters.solved_at_step if solved else None,
                       counters.solved_at_time if solved else None, interrupted)  # fmt: skip


def _floats(row: dict[str, str]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if v != ""}


def _loop(
    learner: Learner, collector: Collector, logger: runlog.MetricsLogger,
    history: list[dict[str, float]], c: Counters, run_dir: Path,
) -> bool:  # fmt: skip
    """Collect, update, log, evaluate, checkpoint; returns whether a Ctrl-C stopped it."""
    config = learner.config
    target = _target(config)
    recent = deque(c.recent, maxlen=20)
    with _StopFlag() as stop, _progress(config) as bar:
        task = bar.add_task("train", total=config.num_updates * config.batch_size,
                            completed=c.global_step, sps="-", ret="-")  # fmt: skip
        while c.update < config.num_updates:
            lr = (
                config.lr * (1.0 - c.update / config.num_updates) if config.anneal_lr else config.lr
            )
            for group in learner.optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            ro = collector.collect()
            info = update(learner, ro)
            dt = time.perf_counter() - t0
            c.update, c.global_step, c.train_time = (
                c.update + 1, c.global_step + config.batch_size, c.train_time + dt)  # fmt: skip
            recent.extend(zip(ro.episode_returns, ro.episode_lengths))
            c.recent = list(recent)
            row = {"update": c.update, "global_step": c.global_step, "time": c.train_time,
                   "sps": config.batch_size / dt, "lr": lr,
                   "episode_return": float(np.mean([r for r, _ in recent])) if recent else math.nan,
                   "episode_length": float(np.mean([n for _, n in recent])) if recent else math.nan,
                   "eval_return": _maybe_evaluate(learner, c, target), **info}  # fmt: skip
            logger.log(row)
            history.append(row)
            bar.update(task, completed=c.global_step, sps=f"{row['sps']:.0f}",
                       ret=f"{row['episode_return']:.1f}")  # fmt: skip
            done = (c.update == config.num_updates or stop.requested
                    or (config.stop_at_threshold and c.solved_at_step >= 0))  # fmt: skip
            if done or c.update % config.checkpoint_interval == 0:
                collector.reset(seed=_reset_seeds(config, c.update))
                runlog.save_checkpoint(run_dir / runlog.CHECKPOINT, checkpoint_state(learner, c))
            if done:
                break
    return stop.requested


def _maybe_evaluate(learner: Learner, c: Counters, target: float | None) -> float:
    """Evaluate when ``global_step`` crossed a multiple of ``eval_every``; record solving."""
    every = learner.config.eval_every
    if not every or c.global_step // every == (c.global_step - learner.config.batch_size) // every:
        return math.nan
    config = learner.config
    mean, _ = evaluate(learner.policy, config.env, config.eval_episodes, seed=config.seed + 10_000)
    if target is not None and mean >= target and c.solved_at_step < 0:
        c.solved_at_step, c.solved_at_time = c.global_step, c.train_time
    return mean


def load(run_dir: str | Path) -> ActorCritic:
    """The policy saved in ``run_dir`` (built from its ``config.json``, weights loaded safely)."""
    run_dir = Path(run_dir)
    config = Config.from_dict(runlog.read_config(run_dir))
    envs = make_env(config.env, num_envs=1, vectorization_mode="sync")
    try:
        policy = build_policy(config, envs)
    finally:
        envs.close()
    policy.load_state_dict(runlog.load_checkpoint(run_dir / runlog.CHECKPOINT)["policy"])
    policy.eval()
    return policy
