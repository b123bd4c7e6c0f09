r"""One update of the policy from one rollout: one function per algorithm, in one table.

=========  ==========================================  ============================================
algo       targets                                     update
=========  ==========================================  ============================================
reinforce  reward-to-go :math:`G_t`, baseline none,    one Adam step on the core's score-function
           batch mean or the critic                    surrogate of :math:`-G_t`, baseline
                                                       :math:`-b_t`
a2c        GAE(γ, λ): λ-return, the critic as          the same step on short rollouts
           baseline
ppo        GAE(γ, λ)                                   clipped surrogate, epochs × minibatches
npg        GAE(γ, λ)                                   natural gradient in a KL trust region
=========  ==========================================  ============================================

:func:`update` is the one entry point: :func:`prepare` (the rollout as the update sees it, never
changed in place), then ``UPDATES[config.algo]``, then one host sync that reports the logged
values and checks that the update's inputs, every loss, every gradient norm and the parameters
are finite (:class:`~logtrick.rl.errors.DivergenceError` otherwise). PPO's whole loss is
:func:`ppo_loss`, one screen on the shared :func:`~logtrick.surrogates.clipped_surrogate`; the
other pieces are the public ones of :mod:`logtrick.rl.losses` with ``check=False``: their inputs
are checked by that sync.
Nothing here depends on where the rollout came from (env id, instance or factory).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from logtrick.rl.learner import Batch, Learner
from logtrick.rl.losses import (
    advantage_moments,
    explained_variance,
    masked_mean,
    normalize_advantages,
    reinforce_loss,
    value_loss,
)
from logtrick.rl.npg import natural_gradient
from logtrick.rl.returns import compute_gae, discounted_returns
from logtrick.rl.rollout import Rollout, next_values_of
from logtrick.surrogates import approx_kl, clipped_surrogate

__all__ = ["PPO_LOGGED", "UPDATES", "ppo_loss", "ppo_update", "prepare", "update"]


# ------------------------------------------------------------------------ the update, prepared


def update(learner: Learner, rollout: Rollout) -> dict[str, float]:
    """One update of the policy (and critic) from one rollout; returns the logged values.

    ``rollout`` is not changed. Raises :class:`~logtrick.rl.errors.DivergenceError` when anything
    the update computed is NaN or inf (the parameters are then unusable: do not save them).
    """
    learner.begin()
    ro = prepare(learner, rollout)
    learner.watch("critic's values", ro.values)
    learner.watch("critic's values", ro.next_values)
    info = UPDATES[learner.config.algo](learner, ro)
    return learner.finish(info)


def prepare(learner: Learner, ro: Rollout) -> Rollout:
    r"""The rollout as the update sees it, a new :class:`Rollout` (``ro`` is left alone).

    With observation normalisation the statistics moved during collection: values and, from the
    bootstrap observations, next values are re-evaluated under the current ones, so that all
    values come from one critic; so are the log-probabilities. A rollout that lags the learner
    (``policy_lag``, ``overlap``) gets the current policy's log-probabilities too, the
    *proximal* policy :math:`\pi_{\text{prox}}` of the decoupled PPO objective (Hilton et al.
    2022), and ``behaviour_weights`` :math:`\pi_{\text{prox}}/\mu` against the behaviour
    policy :math:`\mu` that acted (its stored log-probabilities): PPO then clips the step from
    the policy it starts from and corrects the lag by importance weighting (:func:`ppo_loss`).
    With reward scaling the rewards are scaled (and the running statistics updated).
    """
    config, policy = learner.config, learner.policy
    changes: dict[str, Any] = {}
    if config.normalize_obs or ro.policy_lag:
        with torch.no_grad():
            log_probs, _, values = policy.evaluate_actions(ro.obs, ro.actions, ro.action_masks)
            boot = policy.value(ro.bootstrap_obs) if config.normalize_obs else None
        if boot is not None:
            next_values = next_values_of(values, boot, ro.bootstrap_index, ro.terminated)
            changes.update(values=values, next_values=next_values)
        if ro.policy_lag:
            weights = (log_probs - ro.log_probs).exp()
            learner.watch("behaviour weights", weights)
            changes["behaviour_weights"] = weights
        changes["log_probs"] = log_probs
    if learner.reward_scale is not None:
        done = ro.terminated | ro.truncated
        changes["rewards"] = learner.reward_scale(ro.rewards, done, ro.valid)
    return dataclasses.replace(ro, **changes) if changes else ro


def lag_weighted(batch: Batch, *xs: Tensor) -> tuple[Tensor, ...]:
    r"""``xs`` times the batch's ``behaviour_weights`` :math:`\pi_{\text{prox}}/\mu` (a lagged
    rollout, :func:`prepare`), else unchanged: at :math:`\theta = \pi_{\text{prox}}` the
    weighted score-function terms have the on-policy gradient as their expectation. Every
    update corrects the lag here (PPO on its normalised advantages, the decoupled objective)."""
    weights = batch.get("behaviour_weights")
    return xs if weights is None else tuple(x * weights for x in xs)


def flatten(ro: Rollout, **columns: Tensor) -> Batch:
    """The valid transitions of ``ro`` (and of each ``(T, B)`` column) as flat tensors; with
    action masks, ``"action_masks"`` too."""
    valid = ro.valid.reshape(-1)
    steps = {"log_probs": ro.log_probs, "values": ro.values, **columns}
    if ro.behaviour_weights is not None:
        steps["behaviour_weights"] = ro.behaviour_weights
    per_step = {"obs": ro.obs, "actions": ro.actions, "action_masks": ro.action_masks}
    batch = {k: v.flatten(0, 1)[valid] for k, v in per_step.items() if v is not None}
    return {**batch, **{k: v.expand_as(ro.values).reshape(-1)[valid] for k, v in steps.items()}}


def gae(learner: Learner, ro: Rollout) -> tuple[Tensor, Tensor]:
    """GAE advantages and λ-returns of ``ro`` (inputs and results checked by the update)."""
    config = learner.config
    advantages, returns = compute_gae(
        ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated,
        config.gamma, config.gae_lambda, check=False,
    )  # fmt: skip
    learner.watch("returns", returns)
    return advantages, returns


# ------------------------------------------------------------------------ one per algorithm


PPO_LOGGED = ("policy_loss", "approx_kl", "clip_fraction", "ratio_mean", "value_loss", "entropy",
              "grad_norm")  # fmt: skip
"""What :func:`ppo_update` logs, in the order of :func:`ppo_loss`'s statistics (+ grad_norm)."""


def ppo_loss(learner: Learner, mb: Batch) -> tuple[Tensor, Tensor]:
    r"""PPO's loss on one minibatch, the whole of it (as in CleanRL's ``ppo.py``).

    .. math::  L = -\overline{\min(\rho \hat A,\ \mathrm{clip}(\rho, 1\pm\epsilon) \hat A)}
               + c_v\,\tfrac12\overline{(V_\theta - G^\lambda)^2} - c_e\,\overline{H[\pi_\theta]},
               \qquad \rho = \pi_\theta(a|s) / \mu(a|s)

    :math:`\mu` is the policy before this update, whose log-probabilities the rollout holds.
    With ``overlap`` the rollout was collected one update earlier: :math:`\mu` is then the
    proximal policy (the one before this update) and each advantage is weighted by
    ``behaviour_weights`` :math:`\pi_{\text{prox}}/\mu_{\text{behaviour}}` (after its
    normalisation), the decoupled objective of Hilton et al. 2022,
    :math:`\overline{w \min(\rho \hat A, \mathrm{clip}(\rho, 1\pm\epsilon) \hat A)}` with
    :math:`w > 0`. Returns the loss and the detached statistics named by the first six entries
    of :data:`PPO_LOGGED`.

    Reference: Hilton, Cobbe, Schulman, *Batch size-invariance for policy optimization*,
    NeurIPS 2022 (the decoupled PPO objective).
    """
    config = learner.config
    log_prob, entropy, values = learner.policy.evaluate_actions(
        mb["obs"], mb["actions"], mb.get("action_masks")
    )
    adv = mb["advantages"]
    if config.normalize_advantages:
        adv = normalize_advantages(adv, check=False)
    (adv,) = lag_weighted(mb, adv)  # a lagged rollout: the clip is from the proximal policy
    terms, ratio, log_ratio = clipped_surrogate(log_prob, mb["log_probs"], adv, config.clip_eps)
    policy_loss = terms.mean()
    v_loss, _ = value_loss(values, mb["returns"], mb["values"], config.clip_value, check=False)
    entropy = entropy.mean()
    loss = policy_loss - config.ent_coef * entropy if config.ent_coef else policy_loss
    loss = loss + config.vf_coef * v_loss
    with torch.no_grad():
        clipped = ((ratio - 1.0).abs() > config.clip_eps).to(ratio.dtype)
        stats = torch.stack([policy_loss, approx_kl(ratio, log_ratio).mean(), clipped.mean(),
                             ratio.mean(), v_loss, entropy])  # fmt: skip
    return loss, stats


def ppo_update(learner: Learner, ro: Rollout) -> dict[str, Any]:
    """``update_epochs`` passes of minibatch steps on :func:`ppo_loss`; logged values are the
    last epoch's means (weighted by minibatch size); stops after the first epoch whose mean KL
    passes ``target_kl``. The first epoch's minibatch gradients give ``grad_snr``
    (:func:`~logtrick.rl.learner.gradient_snr`; NaN with one minibatch)."""
    config = learner.config
    advantages, returns = gae(learner, ro)
    batch = flatten(ro, advantages=advantages, returns=returns)
    n, epochs, sums = len(batch["obs"]), 0, torch.zeros(len(PPO_LOGGED))
    for epochs in range(1, config.update_epochs + 1):
        sums = torch.zeros(len(PPO_LOGGED))
        for mb in learner.minibatches(batch):
            loss, stats = ppo_loss(learner, mb)
            grad_norm = learner.step(loss, record_gradient=epochs == 1, weight=len(mb["obs"]))
            sums.add_(torch.cat([stats, grad_norm.reshape(1)]).float(), alpha=len(mb["obs"]))
        kl = sums[1] / n
        if learner.reduce is not None:  # the mean KL of all ranks: they stop together
            (kl,) = learner.reduce([kl], n)
        if config.target_kl is not None and float(kl) > config.target_kl:
            break
    logged: dict[str, Any] = dict(zip(PPO_LOGGED, (sums / n).unbind()))
    ev = explained_variance(batch["values"], batch["returns"])
    return {**logged, "epochs": epochs, "explained_variance": ev}


def score_function_update(learner: Learner, batch: Batch) -> dict[str, Any]:
    r"""One step on the core's surrogate of the cost :math:`-G_t` with baseline :math:`-b_t`
    (:func:`~logtrick.rl.losses.reinforce_loss`), plus the critic's loss and the entropy bonus.
    Standardising the advantages :math:`G_t - b_t` adds their batch mean :math:`\mu` to the
    baseline and scales both by :math:`1/\sigma`."""
    config = learner.config
    log_prob, entropy, values = learner.policy.evaluate_actions(
        batch["obs"], batch["actions"], batch.get("action_masks")
    )
    returns, baseline = batch["returns"], batch["baseline"]
    if config.normalize_advantages:
        mean, inverse_scale = advantage_moments(returns - baseline)
        returns, baseline = returns * inverse_scale, (baseline + mean) * inverse_scale
    returns, baseline = lag_weighted(batch, returns, baseline)
    loss, info = reinforce_loss(log_prob, returns, baseline=baseline, check=False)
    if config.ent_coef:
        loss = loss - config.ent_coef * entropy.mean()
    if config.uses_critic:
        v_loss, _ = value_loss(values, batch["returns"], batch["values"], config.clip_value,
                               check=False)  # fmt: skip
        loss = loss + config.vf_coef * v_loss
        info["value_loss"] = v_loss.detach()
    info["entropy"] = entropy.detach().mean()
    info["grad_norm"] = learner.step(loss, weight=len(batch["obs"]))
    info["explained_variance"] = explained_variance(batch["values"], batch["returns"])
    return info


def reinforce_update(learner: Learner, ro: Rollout) -> dict[str, Any]:
    """REINFORCE: one step on the reward-to-go, cut only at episode ends (the critic
    bootstraps the last row; without one the collector delivers whole episodes)."""
    config = learner.config
    returns = discounted_returns(ro.rewards, ro.next_values, ro.terminated, ro.truncated,
                                 config.gamma, check=False)  # fmt: skip
    learner.watch("returns", returns)
    baselines = {"value": ro.values, "none": torch.zeros(()),
                 "mean": masked_mean(returns, ro.valid)}  # fmt: skip
    batch = flatten(ro, returns=returns, baseline=baselines[config.baseline])
    return score_function_update(learner, batch)


def a2c_update(learner: Learner, ro: Rollout) -> dict[str, Any]:
    """A2C: one step on the λ-returns with the critic as the baseline."""
    _, returns = gae(learner, ro)
    return score_function_update(learner, flatten(ro, returns=returns, baseline=ro.values))


def npg_update(learner: Learner, ro: Rollout) -> dict[str, Any]:
    """Natural-gradient step of the actor in a KL trust region; critic by regression."""
    config, policy = learner.config, learner.policy
    advantages, returns = gae(learner, ro)
    batch = flatten(ro, advantages=advantages, returns=returns)
    obs, actions, old_log_probs = batch["obs"], batch["actions"], batch["log_probs"]
    masks = batch.get("action_masks")
    adv = batch["advantages"]
    if config.normalize_advantages:
        adv = normalize_advantages(adv, check=False)
    (adv,) = lag_weighted(batch, adv)
    with torch.no_grad():
        old_dist = policy.distribution(obs, masks)

    def loss_fn() -> Tensor:  # the importance-weighted surrogate (unclipped), to minimise
        log_prob = policy.distribution(obs, masks).log_prob(actions)
        return clipped_surrogate(log_prob, old_log_probs, adv, None)[0].mean()

    def kl_fn() -> Tensor:
        return torch.distributions.kl_divergence(old_dist, policy.distribution(obs, masks)).mean()

    reduce = learner.reduce
    _, info = natural_gradient(
        loss_fn, kl_fn, list(policy.actor_parameters()), max_kl=config.max_kl,
        cg_iters=config.cg_iters, damping=config.cg_damping, line_search=config.line_search,
        reduce=None if reduce is None else lambda x: reduce([x], len(obs))[0],
    )  # fmt: skip
    for _ in range(config.update_epochs):
        for mb in learner.minibatches({"obs": obs, "returns": batch["returns"]}):
            vl, _ = value_loss(policy.value(mb["obs"]), mb["returns"], check=False)
            learner.step(vl, weight=len(mb["obs"]))
    ev = explained_variance(batch["values"], batch["returns"])
    return {**info, "value_loss": vl.detach(), "explained_variance": ev}


UPDATES: dict[str, Callable[[Learner, Rollout], dict[str, Any]]] = {
    "reinforce": reinforce_update,
    "a2c": a2c_update,
    "ppo": ppo_update,
    "npg": npg_update,
}
"""The update of each algorithm (``Config.algo``): ``(learner, prepared rollout) -> info``
(tensors or floats, turned into floats by :meth:`Learner.finish`)."""
