r"""The algorithm: sample trajectories, compute the policy gradient, update the policy.

One flat loop serves ``reinforce``, ``a2c``, ``ppo`` and ``npg``; they differ only in how the
advantage is estimated and how the gradient is applied (:func:`update`):

=========  ==========================================  ============================================
algo       advantage :math:`\hat A_t`                   update
=========  ==========================================  ============================================
reinforce  reward-to-go :math:`G_t - b` (b: none, mean,  one Adam step on
           learned value)                               :math:`-\mathrm{mean}(\log\pi\,\hat A)`
a2c        GAE(γ, λ) with a learned critic             one Adam step, short rollouts
ppo        GAE(γ, λ)                                    clipped surrogate, epochs × minibatches
npg        GAE(γ, λ)                                    natural gradient in a KL trust region
=========  ==========================================  ============================================

Shapes: rollouts are time-major, ``(T, B)`` = ``(num_steps, num_envs)``.
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
from torch import Tensor

from logtrick import logging as runlog
from logtrick.rl.config import Config
from logtrick.rl.losses import (
    entropy_bonus,
    explained_variance,
    natural_gradient,
    normalize_advantages,
    ppo_clip_loss,
    reinforce_loss,
    value_loss,
)
from logtrick.rl.policies import ActorCritic
from logtrick.rl.returns import compute_gae, discounted_returns
from logtrick.rl.rollout import Collector, Rollout, make_env

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


def advantages_and_returns(config: Config, ro: Rollout) -> tuple[Tensor, Tensor]:
    """Advantages and value targets for one rollout, ``(T, B)`` each."""
    if config.algo == "reinforce":
        next_values = ro.next_values if config.baseline == "value" else torch.zeros_like(ro.rewards)
        returns = discounted_returns(
            ro.rewards, next_values, ro.terminated, ro.truncated, config.gamma
        )
        if config.baseline == "value":
            return returns - ro.values, returns
        if config.baseline == "mean":
            return returns - returns[ro.valid].mean(), returns
        return returns, returns
    return compute_gae(
        ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated,
        config.gamma, config.gae_lambda,
    )  # fmt: skip


@dataclass
class Learner:
    """What an update changes: the policy, its optimizer, and the minibatch RNG."""

    config: Config
    policy: ActorCritic
    optimizer: torch.optim.Optimizer
    generator: torch.Generator

    def step(self, loss: Tensor) -> Tensor:
        """One optimizer step on ``loss`` with gradient-norm clipping; returns the norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return norm

    def minibatches(self, n: int) -> list[Tensor]:
        """A fresh random split of ``range(n)`` into ``num_minibatches`` index sets."""
        size = max(1, n // self.config.num_minibatches)
        return list(torch.randperm(n, generator=self.generator).split(size))


def minibatch_loss(learner: Learner, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy-gradient loss (REINFORCE form, or PPO's clipped form) + value loss − entropy bonus."""
    config, policy = learner.config, learner.policy
    log_prob, entropy, values = policy.evaluate_actions(batch["obs"], batch["actions"])
    adv = batch["advantages"]
    if config.normalize_advantages and adv.numel() > 1:
        adv = normalize_advantages(adv)
    if config.algo == "ppo":
        pg, info = ppo_clip_loss(log_prob, batch["log_probs"], adv, config.clip_eps)
    else:
        pg, info = reinforce_loss(log_prob, adv)
    loss = pg - config.ent_coef * entropy_bonus(entropy)
    if config.uses_critic:
        vl, _ = value_loss(values, batch["returns"], batch["values"], config.clip_value)
        loss = loss + config.vf_coef * vl
        info["value_loss"] = vl.detach()
    info["entropy"] = entropy.detach().mean()
    return loss, info


def flatten_rollout(config: Config, ro: Rollout) -> dict[str, Tensor]:
    """The valid transitions of a rollout as flat ``(N, ...)`` tensors, with advantages."""
    advantages, returns = advantages_and_returns(config, ro)
    valid = ro.valid.reshape(-1)
    return {
        "obs": ro.obs.flatten(0, 1)[valid],
        "actions": ro.actions.flatten(0, 1)[valid],
        "log_probs": ro.log_probs.reshape(-1)[valid],
        "values": ro.values.reshape(-1)[valid],
        "advantages": advantages.reshape(-1)[valid],
        "returns": returns.reshape(-1)[valid],
    }


def update(learner: Learner, ro: Rollout) -> dict[str, float]:
    """One update of the policy (and critic) from one rollout; returns logging info."""
    config, policy = learner.config, learner.policy
    if config.normalize_obs:  # the statistics moved during collection: re-evaluate
        with torch.no_grad():
            ro.log_probs, _, values = policy.evaluate_actions(ro.obs, ro.actions)
            if config.uses_critic:
                ro.values = values
    flat = flatten_rollout(config, ro)
    info: dict[str, Any] = {
        "explained_variance": explained_variance(flat["values"], flat["returns"])
    }
    if config.algo == "npg":
        info.update(npg_update(learner, flat))
    elif config.algo == "ppo":
        info.update(ppo_update(learner, flat))
    else:  # reinforce, a2c: one gradient step on the whole rollout
        loss, step_info = minibatch_loss(learner, flat)
        info.update(step_info, grad_norm=learner.step(loss))
    return {k: float(v) for k, v in info.items()}


def ppo_update(learner: Learner, flat: dict[str, Tensor]) -> dict[str, Any]:
    """``update_epochs`` passes of minibatch steps; stops early past ``target_kl``."""
    config, info, epochs = learner.config, {}, 0
    for epochs in range(1, config.update_epochs + 1):  # noqa: B007  (reported below)
        for idx in learner.minibatches(flat["obs"].shape[0]):
            loss, info = minibatch_loss(learner, {k: v[idx] for k, v in flat.items()})
            info["grad_norm"] = learner.step(loss)
        if config.target_kl is not None and float(info["approx_kl"]) > config.target_kl:
            break
    return {**info, "epochs": epochs}


def npg_update(learner: Learner, flat: dict[str, Tensor]) -> dict[str, Any]:
    """Natural-gradient step of the actor in a KL trust region; critic by regression."""
    config, policy = learner.config, learner.policy
    obs, actions, old_log_probs = flat["obs"], flat["actions"], flat["log_probs"]
    adv = (
        normalize_advantages(flat["advantages"])
        if config.normalize_advantages
        else flat["advantages"]
    )
    with torch.no_grad():
        old_dist = policy.distribution(obs)

    def loss_fn() -> Tensor:  # the importance-weighted surrogate, to minimise
        ratio = torch.exp(policy.distribution(obs).log_prob(actions) - old_log_probs)
        return -(ratio * adv).mean()

    def kl_fn() -> Tensor:
        return torch.distributions.kl_divergence(old_dist, policy.distribution(obs)).mean()

    _, info = natural_gradient(
        loss_fn, kl_fn, list(policy.actor_parameters()), max_kl=config.max_kl,
        cg_iters=config.cg_iters, damping=config.cg_damping, line_search=config.line_search,
    )  # fmt: skip
    for _ in range(config.update_epochs):
        for idx in learner.minibatches(obs.shape[0]):
            vl, _ = value_loss(policy.value(obs[idx]), flat["returns"][idx])
            learner.step(vl)
    return {**info, "value_loss": vl.detach()}


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
    }


def restore(learner: Learner, state: dict[str, Any]) -> Counters:
    learner.policy.load_state_dict(state["policy"])
    learner.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    learner.generator.set_state(state["generator"])
    return Counters(**state["counters"])


def make_learner(config: Config, envs: Any) -> Learner:
    """Seed torch, build the policy and its optimizer (npg: the critic's only)."""
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    policy = build_policy(config, envs)
    params = policy.critic_parameters() if config.algo == "npg" else policy.parameters()
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=1e-5)
    return Learner(config, policy, optimizer, torch.Generator().manual_seed(config.seed + 1))


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
