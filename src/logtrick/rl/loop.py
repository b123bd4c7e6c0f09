r"""The training loop: sample trajectories, compute the policy gradient, update the policy.

One flat loop, :func:`run_loop`, serves ``reinforce``, ``a2c``, ``ppo`` and ``npg``: collect a
rollout (:class:`~logtrick.rl.rollout.Collector`), update (:func:`~logtrick.rl.update.update`,
where the algorithms differ), log, evaluate, call back, checkpoint. It runs what
:mod:`logtrick.rl.build` assembled; :class:`~logtrick.rl.Agent` is its one caller (``rl.train``,
``rl.load`` and the CLI go through the Agent). Shapes: rollouts
are time-major, ``(T, B)`` = ``(num_steps, num_envs)``.

Nothing is lost and nothing fails silently:

* a config is checked when it is made, and the envs, policy and collector are built
  (:mod:`logtrick.rl.build`) before the run directory is created, so bad input leaves nothing
  behind;
* one process writes a run directory at a time (:func:`~logtrick.rl.runs.lock_run_dir`);
* an update that produces NaN or inf stops the run with a
  :class:`~logtrick.rl.errors.DivergenceError` before anything of it is logged or saved: the last
  checkpoint stays the last good one;
* a resumed run continues its learner exactly (weights, optimizer, random generators,
  observation and reward statistics, learning-rate schedule) and refuses settings that
  contradict its saved config (:data:`~logtrick.rl.config.RESUME_FIELDS` may change). The
  environments' mid-episode state cannot be saved safely (checkpoints hold tensors and numbers
  only), so checkpoints leave the envs running and a resume resets them with seeds derived from
  ``(seed, update)``: resuming one checkpoint twice gives the same run.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logtrick.checks import check_positive_int, check_seed
from logtrick.rl import distributed, runs
from logtrick.rl.checkpoint import Counters, checkpoint_state
from logtrick.rl.config import Config
from logtrick.rl.distributed import ranks_from_env
from logtrick.rl.env_checks import env_errors, episode_step_limit
from logtrick.rl.envs import make_env
from logtrick.rl.errors import DivergenceError, WorkerError
from logtrick.rl.learner import Learner
from logtrick.rl.masks import info_action_mask
from logtrick.rl.policies import ActorCritic
from logtrick.rl.signals import StopSignals
from logtrick.rl.update import update

__all__ = ["Callback", "Session", "evaluate", "floats", "run_loop"]


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
    check_positive_int("episodes", episodes)
    check_seed("seed", seed)
    envs = make_env(env, num_envs=episodes, vectorization_mode="sync")
    name = env if isinstance(env, str) else getattr(env, "__qualname__", type(env).__name__)
    try:
        with env_errors(name, "in an evaluation"):
            totals, cut, limit, own = _episodes(policy, envs, seed, deterministic)
    finally:
        envs.close()
    if cut:
        _warn_cut(name, cut, episodes, limit, own)
    return float(totals.mean()), float(totals.std())


def _episodes(
    policy: ActorCritic, envs: Any, seed: int, deterministic: bool
) -> tuple[np.ndarray, int, int, bool]:
    """The returns of one episode per env (reset seeds ``seed + i``), bounded by
    :func:`~logtrick.rl.env_checks.episode_step_limit`; also how many were cut at the bound."""
    n = envs.num_envs
    obs, info = envs.reset(seed=[seed + i for i in range(n)])
    totals, running = np.zeros(n), np.ones(n, dtype=bool)
    limit, own = episode_step_limit(envs)
    for _ in range(limit):  # an env's own TimeLimit truncates at its `limit`-th step
        action = policy.act(obs, deterministic, info_action_mask(info))
        obs, reward, terminated, truncated, info = envs.step(action)
        totals += np.where(running, reward, 0.0)
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return totals, int(running.sum()), limit, own


def _warn_cut(name: str, cut: int, episodes: int, limit: int, own: bool) -> None:
    """One line: an evaluation stopped episodes that had not ended (not a hang)."""
    why = "its max_episode_steps" if own else "it has no TimeLimit: the default bound"
    warnings.warn(
        f"evaluate: {cut} of {episodes} episodes of {name} had not ended after {limit:,} "
        f"steps ({why}); their returns so far are counted",
        stacklevel=3,
    )


def _progress(config: Config) -> Any:
    from logtrick.rl.progress import progress_bar

    return progress_bar(config)


Callback = Callable[[dict[str, float]], Any]
"""``fn(metrics) -> bool``: called with each update's logged row; a true result stops training."""


@dataclass
class Session:
    """What the loop runs on: the learner, its collector and counters, where evaluation episodes
    come from (an env id or factory) and the run directory (locked by the caller)."""

    learner: Learner
    collector: Any
    """Anything with ``collect() -> Rollout`` (:func:`~logtrick.rl.build.new_collector`)."""
    counters: Counters
    env: Any
    run_dir: Path
    history: list[dict[str, float]]
    target: float | None
    """The return that counts as solved (:func:`~logtrick.rl.build.target_return`)."""


def run_loop(s: Session, first: bool, callback: Callback | None = None) -> int:
    """Train ``s`` to ``config.total_steps`` with its logger, then draw the plot; returns the
    signal that stopped it (SIGINT: Ctrl-C, SIGTERM: preemption), else 0. ``first``: a new run
    directory (else the metrics of updates after ``counters.update`` are dropped: they are not
    in the checkpoint)."""
    config = s.learner.config
    keep = None if first else s.counters.update
    wandb = config.to_dict() if config.wandb and ranks_from_env().writer else None  # rank 0
    logger = runs.MetricsLogger(s.run_dir, config.tensorboard, keep_until=keep, wandb_config=wandb)
    if first:
        logger.log_hparams(config.to_dict())
    try:
        interrupted = _loop(s, logger, callback)
    finally:
        logger.close()
    if config.plot:
        runs.plot_learning_curve(
            s.history, s.run_dir / runs.CURVE, title=config.name, threshold=s.target
        )
    return interrupted


def floats(row: dict[str, str]) -> dict[str, float]:
    """A ``metrics.csv`` row as floats (empty cells left out)."""
    return {k: float(v) for k, v in row.items() if v != ""}


def _set_lr(learner: Learner, lr: float) -> None:
    for group in learner.optimizer.param_groups:
        group["lr"] = lr


def _loop(s: Session, logger: runs.MetricsLogger, callback: Callback | None) -> int:
    """Collect, update, log, evaluate, call back, checkpoint; returns the signal (SIGINT,
    SIGTERM) that stopped it, else 0. Stops at the budget, at such a signal, when the callback
    returns true, or (with ``stop_at_threshold``) after an evaluation that reaches the target."""
    config, learner, c = s.learner.config, s.learner, s.counters
    target, saved_at = s.target, c.update
    recent = deque(c.recent, maxlen=20)
    with StopSignals() as stop, _progress(config) as bar:
        task = bar.add_task(
            "train", total=config.total_steps, completed=c.global_step, sps="-", ret="-"
        )
        while c.global_step < config.total_steps:
            try:
                with env_errors(config.env, _when(c), _kept(saved_at)):  # the env's, named
                    row = _one_update(s, recent, target, saved_at)
            except WorkerError as err:  # before the update: the learner is the last good one
                raise _worker_failed(s, err) from None
            except RuntimeError as err:
                if not distributed.is_rank_failure(err):
                    raise
                raise distributed.rank_failed(err, c.update, saved_at) from None
            logger.log(row)
            s.history.append(row)
            bar.update(
                task,
                completed=c.global_step,
                sps=f"{row['sps']:.0f}",
                ret=f"{row['episode_return']:.1f}",
            )
            solved = config.stop_at_threshold and row["eval_return"] >= _or_inf(target)
            asked = callback is not None and bool(callback(dict(row)))
            done = stop.requested or asked or solved or c.global_step >= config.total_steps
            done = distributed.any_rank(done)  # ranks stop together (a callback, a Ctrl-C)
            if done or c.update % config.checkpoint_interval == 0:
                runs.save_checkpoint(s.run_dir / runs.CHECKPOINT, checkpoint_state(learner, c))
                saved_at = c.update
            if done:
                break
    return stop.received


def _when(c: Counters) -> str:
    return f"in update {c.update + 1} (after env step {c.global_step:,})"


def _kept(saved_at: int) -> str:
    if saved_at:
        return f"the run directory keeps the checkpoint of update {saved_at}"
    return "no checkpoint was written"


def _or_inf(target: float | None) -> float:
    """The target, or +inf without one (0 is a target)."""
    return math.inf if target is None else target


def _one_update(
    s: Session, recent: deque[tuple[float, int]], target: float | None, saved_at: int
) -> dict[str, float]:
    """One rollout and update, then the evaluation if one is due; returns the logged row."""
    learner, c = s.learner, s.counters
    lr = c.lr(learner.config)
    _set_lr(learner, lr)
    t0 = time.perf_counter()
    ro = s.collector.collect()
    steps = distributed.global_steps(ro)  # summed over the ranks
    try:
        info = update(learner, ro)
    except DivergenceError as err:
        raise _diverged(learner.config, c, steps, saved_at, err) from None
    dt = time.perf_counter() - t0
    c.update, c.global_step, c.train_time = c.update + 1, c.global_step + steps, c.train_time + dt
    recent.extend(zip(ro.episode_returns, ro.episode_lengths))
    c.recent = list(recent)
    returns, lengths = [r for r, _ in recent], [n for _, n in recent]
    return {
        "update": c.update,
        "global_step": c.global_step,
        "time": c.train_time,
        "sps": steps / dt,
        "lr": lr,
        "episode_return": float(np.mean(returns)) if recent else math.nan,
        "episode_length": float(np.mean(lengths)) if recent else math.nan,
        "eval_return": _maybe_evaluate(s, target, steps),
        **episode_metrics(ro.episode_returns),
        **getattr(s.collector, "metrics", dict)(),  # Ray workers: steps, seconds, restarts
        **info,
    }


def episode_metrics(returns: list[float]) -> dict[str, float]:
    """The episodes that ended in this iteration (of every rank and worker): how many, and
    their lowest and highest return (NaN when none ended)."""
    return {
        "episodes": float(len(returns)),
        "episode_return_min": min(returns) if returns else math.nan,
        "episode_return_max": max(returns) if returns else math.nan,
    }


def _worker_failed(s: Session, err: WorkerError) -> WorkerError:
    """``err`` with the checkpoint written now, of the last update that completed."""
    path = s.run_dir / runs.CHECKPOINT
    runs.save_checkpoint(path, checkpoint_state(s.learner, s.counters))
    failure = WorkerError(f"{s.learner.config.name}: {err}; the last good checkpoint "
                          f"(update {s.counters.update}) is written to {path}")  # fmt: skip
    for note in getattr(err, "__notes__", []):
        failure.add_note(note)
    return failure


def _diverged(
    config: Config, c: Counters, steps: int, saved_at: int, err: DivergenceError
) -> DivergenceError:
    """The divergence error with where it happened and what the run directory keeps."""
    kept = f"the checkpoint of update {saved_at}" if saved_at else "no checkpoint (none was due)"
    return DivergenceError(
        f"{config.name}: training diverged at update {c.update + 1} (env step "
        f"{c.global_step + steps:,}): {err}. The run directory keeps {kept}."
    )


def _maybe_evaluate(s: Session, target: float | None, steps: int) -> float:
    """Evaluate when ``global_step`` crossed a multiple of ``eval_every``; record solving."""
    learner, c = s.learner, s.counters
    every = learner.config.eval_every
    if not every or c.global_step // every == (c.global_step - steps) // every:
        return math.nan
    config = learner.config
    mean = math.nan
    if distributed.ranks_from_env().writer:  # once, on rank 0; every rank gets its result
        mean, _ = evaluate(learner.policy, s.env, config.eval_episodes, seed=config.seed + 10_000)
    mean = distributed.from_rank0(mean)
    if target is not None and mean >= target and c.solved_at_step < 0:
        c.solved_at_step, c.solved_at_time = c.global_step, c.train_time
    return mean
