r"""One update of the policy from one rollout: advantages, then the gradient step.

=========  ==========================================  ============================================
algo       advantage :math:`\hat A_t`                   update
=========  ==========================================  ============================================
reinforce  reward-to-go :math:`G_t - b` (b: none, mean,  one Adam step on
           learned value)                               :math:`-\mathrm{mean}(\log\pi\,\hat A)`
a2c        GAE(γ, λ) with a learned critic             one Adam step, short rollouts
ppo        GAE(γ, λ)                                    clipped surrogate, epochs × minibatches
npg        GAE(γ, λ)                                    natural gradient in a KL trust region
=========  ==========================================  ============================================

Split from ``train.py`` (the loop) to keep both small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from logtrick.rl.config import Config
from logtrick.rl.losses import (
    _check_finite,
    _normalize_unchecked,
    _ppo_clip_unchecked,
    _value_loss_unchecked,
    explained_variance,
    natural_gradient,
    normalize_advantages,
    value_loss,
)
from logtrick.rl.policies import ActorCritic, merge_moments
from logtrick.rl.returns import compute_gae, discounted_returns
from logtrick.rl.rollout import Rollout

__all__ = ["Learner", "RewardScale", "advantages_and_returns", "update"]


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
class RewardScale:
    r"""Divide rewards by a running standard deviation of the discounted return.

    .. math::  R_t = \gamma R_{t-1} (1 - d_{t-1}) + r_t,\qquad
               \tilde r_t = r_t / \sqrt{\mathrm{Var}[R]}

    (the scaling of Engstrom et al. 2020, "Implementation Matters in Deep RL", as in SB3's
    ``VecNormalize``). The critic then learns scaled values; advantages are unchanged in sign.
    """

    gamma: float
    running: Tensor | None = None
    """(B,) discounted return of the current episodes."""
    count: float = 1e-4
    mean: float = 0.0
    var: float = 1.0

    def __call__(self, rewards: Tensor, done: Tensor, valid: Tensor) -> Tensor:
        if self.running is None:
            self.running = torch.zeros(rewards.shape[1], dtype=torch.float64)
        seen = torch.empty_like(rewards, dtype=torch.float64)
        for t in range(rewards.shape[0]):
            self.running = self.running * self.gamma + rewards[t]
            seen[t] = self.running
            self.running = torch.where(done[t], 0.0, self.running)
        batch = seen[valid]
        n, m, v = batch.numel(), float(batch.mean()), float(batch.var(unbiased=False))
        self.count, self.mean, self.var = merge_moments(self.count, self.mean, self.var, n, m, v)
        return (rewards / (self.var**0.5 + 1e-8)).to(rewards.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running, "count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running, self.count = state["running"], state["count"]
        self.mean, self.var = state["mean"], state["var"]


@dataclass
class Learner:
    """What an update changes: the policy, its optimizer, the minibatch RNG, the reward scale."""

    config: Config
    policy: ActorCritic
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    reward_scale: RewardScale | None = None
    params: list[torch.nn.Parameter] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.params = list(self.policy.parameters())

    def step(self, loss: Tensor) -> Tensor:
        """One optimizer step on ``loss`` with gradient-norm clipping; returns the norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_grad_norm([p.grad for p in self.params if p.grad is not None],
                              self.config.max_grad_norm)  # fmt: skip
        self.optimizer.step()
        # A fused optimizer writes in place without bumping version counters; the policy's
        # cached inference weights are keyed on them.
        for p in self.params:
            increment_version(p)
        return norm

    def minibatches(self, n: int) -> list[Tensor]:
        """A fresh random split of ``range(n)`` into ``num_minibatches`` index sets."""
        size = max(1, n // self.config.num_minibatches)
        return list(torch.randperm(n, generator=self.generator).split(size))


def clip_grad_norm(grads: list[Tensor], max_norm: float) -> Tensor:
    r"""Scale ``grads`` in place to global norm at most ``max_norm``; returns the norm before.

    .. math::  g \leftarrow g \cdot \min\big(1, \tfrac{c}{\|g\|_2 + 10^{-6}}\big)

    ``torch.nn.utils.clip_grad_norm_`` with the same result, in two ``_foreach`` kernels (that
    function takes the per-tensor Python loop on CPU).

    Args:
        grads: gradient tensors (any shapes).
        max_norm: :math:`c > 0`; ``inf`` only measures.

    Returns:
        The 0-dim global 2-norm before clipping.
    """
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if math.isfinite(max_norm):
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
    return total


def minibatch_loss(
    learner: Learner, batch: dict[str, Tensor], with_info: bool = True
) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy-gradient loss (REINFORCE form, or PPO's clipped form) + value loss − entropy bonus.

    The inputs are checked once per update (:func:`update`), not here; ``with_info=False`` skips
    the logged statistics (PPO's inner minibatches).
    """
    config, policy = learner.config, learner.policy
    log_prob, entropy, values = policy.evaluate_actions(batch["obs"], batch["actions"])
    adv = batch["advantages"]
    if config.normalize_advantages and adv.numel() > 1:
        adv = _normalize_unchecked(adv)
    if config.algo == "ppo":
        pg, info = _ppo_clip_unchecked(
            log_prob, batch["log_probs"], adv, config.clip_eps, with_info=with_info
        )
    else:  # reinforce_loss without its checks
        pg = -(log_prob * adv.detach()).mean()
        info = {"policy_loss": pg.detach()} if with_info else {}
    loss = pg - config.ent_coef * entropy.mean() if config.ent_coef else pg
    if config.uses_critic:
        vl, _ = _value_loss_unchecked(values, batch["returns"], batch["values"], config.clip_value)
        loss = loss + config.vf_coef * vl
        if with_info:
            info["value_loss"] = vl.detach()
    if with_info:
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
    if learner.reward_scale is not None:
        ro.rewards = learner.reward_scale(ro.rewards, ro.terminated | ro.truncated, ro.valid)
    flat = flatten_rollout(config, ro)
    _check_flat(flat)
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
    tensors = [k for k, v in info.items() if isinstance(v, Tensor)]
    values = torch.stack([info[k].float() for k in tensors]).tolist() if tensors else []
    return {**{k: float(v) for k, v in info.items()}, **dict(zip(tensors, values))}


def _check_flat(flat: dict[str, Tensor]) -> None:
    """Advantages and value targets must be finite (one host sync per update)."""
    if not bool(flat["advantages"].isfinite().all() & flat["returns"].isfinite().all()):
        _check_finite("advantages", flat["advantages"], None)
        _check_finite("returns", flat["returns"], None)


def ppo_update(learner: Learner, flat: dict[str, Tensor]) -> dict[str, Any]:
    """``update_epochs`` passes of minibatch steps; stops early past ``target_kl``."""
    config, info, epochs = learner.config, {}, 0
    n, keys = flat["obs"].shape[0], list(flat)
    size = max(1, n // config.num_minibatches)
    for epochs in range(1, config.update_epochs + 1):  # noqa: B007  (reported below)
        if size >= n:  # one minibatch: the whole batch, order irrelevant
            batches = [flat]
        else:  # one gather per tensor per epoch; the minibatches are views of it
            perm = torch.randperm(n, generator=learner.generator)
            parts = [flat[k][perm].split(size) for k in keys]
            batches = [dict(zip(keys, p)) for p in zip(*parts)]
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            loss, step_info = minibatch_loss(learner, batch, with_info=last)
            norm = learner.step(loss)
            if last:
                info = {**step_info, "grad_norm": norm}
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
