r"""Policy-gradient losses and the natural gradient.

Every loss returns ``(loss, info)``: ``loss`` is the scalar to differentiate (to *minimise*),
``info`` a dict of detached 0-dim tensors for logging (no host sync inside the update loop).
All inputs are time-major ``(T, B)`` tensors (any shape works as long as the arguments agree);
``mask`` is a bool tensor of the same shape whose ``False`` entries (e.g. the reset transition of
NEXT_STEP autoreset) are left out of every mean and may hold any value.

The policy gradient (Williams 1992; Sutton et al. 2000) that all of them estimate is

.. math::  \nabla_\theta J(\theta)
           = \mathbb{E}_\tau\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t|s_t)\, \hat A_t\Big].

The natural gradient (Kakade 2001) preconditions it with the inverse Fisher information of the
policy, computed without a matrix from Fisher-vector products and conjugate gradient (Schulman et
al. 2015, TRPO).
"""

from __future__ import annotations

import torch
from torch import Tensor

from logtrick.rl.natural_gradient import (  # re-exported: DESIGN maps the idea to losses.py
    _check_positive,
    conjugate_gradient,
    fisher_vector_product,
    natural_gradient,
)
from logtrick.surrogate import clipped_surrogate

__all__ = [
    "conjugate_gradient",
    "entropy_bonus",
    "explained_variance",
    "fisher_vector_product",
    "masked_mean",
    "natural_gradient",
    "normalize_advantages",
    "ppo_clip_loss",
    "reinforce_loss",
    "value_loss",
]


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    return x


def _check_like(name: str, x: object, ref_name: str, ref: Tensor) -> Tensor:
    x = _check_tensor(name, x)
    if x.shape != ref.shape:
        raise ValueError(
            f"{name}: expected the shape of {ref_name} {tuple(ref.shape)} "
            f"(one entry per time step and env), got {tuple(x.shape)}"
        )
    return x


def _check_mask(mask: Tensor | None, ref_name: str, ref: Tensor) -> Tensor | None:
    if mask is None:
        return None
    mask = _check_like("mask", mask, ref_name, ref)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor (True = valid), got dtype {mask.dtype}")
    return mask


def _check_finite(name: str, x: Tensor, mask: Tensor | None) -> None:
    bad = ~x.detach().isfinite()
    if mask is not None:
        bad &= mask
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} of {x.numel()} entries are NaN or inf "
            f"(first at index {idx}, shape {tuple(x.shape)}); expected finite values"
        )


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean of ``x`` over the entries where ``mask`` is True.

    .. math::  \bar x = \frac{\sum_i m_i x_i}{\max(1, \sum_i m_i)}

    Masked-out entries may hold NaN (they are selected away, not multiplied by zero). With no
    valid entry the result is 0 (and its gradient zero), so such a minibatch changes nothing.

    Args:
        x: ``(T, B)`` values (any shape).
        mask: ``(T, B)`` bool, or ``None`` for the plain mean.

    Returns:
        A 0-dim tensor.
    """
    x = _check_tensor("x", x)
    mask = _check_mask(mask, "x", x)
    if mask is None:
        return x.mean()
    total = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / mask.sum().clamp_min(1).to(x.dtype)


def reinforce_loss(
    log_probs: Tensor, advantages: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The REINFORCE / vanilla policy-gradient loss :math:`-\overline{\log\pi \cdot \hat A}`.

    .. math::  L(\theta) = -\frac{1}{N}\sum_{(t,b)\ \mathrm{valid}}
               \log \pi_\theta(a_t|s_t)\, \hat A_t,
               \qquad -\nabla_\theta L \approx \nabla_\theta J(\theta)
               = \mathbb{E}\Big[\sum_t \nabla_\theta \log\pi_\theta(a_t|s_t)\, \hat A_t\Big]

    (up to the constant factor of the mean). Requires: ``log_probs`` differentiable in the policy
    parameters, computed at the actions that were *sampled* (not reparameterised); ``advantages``
    are treated as constants (detached) and must not depend on the action they weight except
    through the return (reward-to-go, GAE, or the return minus a state baseline).

    Args:
        log_probs: ``(T, B)`` :math:`\log \pi_\theta(a_t|s_t)`.
        advantages: ``(T, B)`` :math:`\hat A_t`, finite.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        ``(loss, info)`` with ``info = {"policy_loss"}``.

    References:
        Williams (1992), Simple statistical gradient-following algorithms for connectionist
        reinforcement learning. Sutton et al. (2000), Policy gradient methods for reinforcement
        learning with function approximation.
    """
    log_probs = _check_tensor("log_probs", log_probs)
    advantages = _check_like("advantages", advantages, "log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    _check_finite("advantages", advantages, mask)
    loss = -masked_mean(log_probs * advantages.detach(), mask)
    return loss, {"policy_loss": loss.detach()}


def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The PPO clipped surrogate loss.

    .. math::  r_t = \frac{\pi_\theta(a_t|s_t)}{\pi_{\mathrm{old}}(a_t|s_t)},\qquad
               L(\theta) = -\overline{\min\big(r_t \hat A_t,\
               \mathrm{clip}(r_t, 1-\epsilon, 1+\epsilon)\, \hat A_t\big)}

    At :math:`\theta = \theta_{\mathrm{old}}` its gradient is the policy gradient; the clip
    removes the incentive to move :math:`r_t` outside :math:`[1-\epsilon, 1+\epsilon]`. Requires
    actions sampled from :math:`\pi_{\mathrm{old}}`; ``old_log_probs`` and ``advantages`` are
    detached. Logged: ``approx_kl``, the k3 estimator of
    :math:`\mathrm{KL}(\pi_{\mathrm{old}}\,\|\,\pi_\theta)`, unbiased and never negative,

    .. math::  \widehat{\mathrm{KL}} = \overline{(r_t - 1) - \log r_t},

    ``clip_fraction`` (share of entries with :math:`|r_t - 1| > \epsilon`) and ``ratio_mean``.

    Args:
        log_probs: ``(T, B)`` :math:`\log\pi_\theta(a_t|s_t)` under the current parameters.
        old_log_probs: ``(T, B)`` the log-probabilities at collection time.
        advantages: ``(T, B)`` :math:`\hat A_t`, finite.
        clip_eps: :math:`\epsilon > 0`, e.g. 0.2.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        ``(loss, info)`` with ``info = {"policy_loss", "approx_kl", "clip_fraction",
        "ratio_mean"}``.

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms. Schulman (2020),
        Approximating KL divergence (blog post; the k3 estimator).
    """
    log_probs = _check_tensor("log_probs", log_probs)
    old_log_probs = _check_like("old_log_probs", old_log_probs, "log_probs", log_probs)
    advantages = _check_like("advantages", advantages, "log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    eps = _check_positive("clip_eps", clip_eps)
    _check_finite("advantages", advantages, mask)
    return _ppo_clip_unchecked(log_probs, old_log_probs, advantages, eps, mask)


def _ppo_clip_unchecked(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    eps: float,
    mask: Tensor | None = None,
    with_info: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`ppo_clip_loss` without argument checks (the trainer's inner loop, whose inputs
    were checked once per update); ``with_info=False`` skips the logged statistics."""
    terms, ratio, log_ratio = clipped_surrogate(log_probs, old_log_probs, advantages, eps)
    loss = terms.mean() if mask is None else masked_mean(terms, mask)
    if not with_info:
        return loss, {}
    with torch.no_grad():
        info = {
            "policy_loss": loss.detach(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > eps).to(ratio.dtype), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, info


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_eps: float | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Squared-error loss of the critic, optionally with PPO-style value clipping.

    .. math::  L = \tfrac12\,\overline{(V_\theta(s_t) - G_t)^2}
               \quad\text{or, clipped,}\quad
               L = \tfrac12\,\overline{\max\big((V_\theta - G_t)^2,\
               (V_{\mathrm{old}} + \mathrm{clip}(V_\theta - V_{\mathrm{old}}, -\epsilon,
               \epsilon) - G_t)^2\big)}

    Clipping (as in the PPO reference implementations) needs ``old_values``, the critic's values
    at collection time; ``old_values`` with ``clip_eps=None`` is ignored.

    Args:
        values: ``(T, B)`` :math:`V_\theta(s_t)` under the current parameters.
        returns: ``(T, B)`` regression targets :math:`G_t` (detached), finite.
        old_values: ``(T, B)`` values at collection time, or ``None``.
        clip_eps: :math:`\epsilon > 0` in the units of the values, or ``None`` for no clipping.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        ``(loss, info)`` with ``info = {"value_loss"}`` and, when clipping,
        ``"value_clip_fraction"`` (share of entries with :math:`|V_\theta - V_{\mathrm{old}}| >
        \epsilon`).

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms; Engstrom et al. (2020),
        Implementation Matters in Deep Policy Gradients (on value clipping).
    """
    values = _check_tensor("values", values)
    returns = _check_like("returns", returns, "values", values)
    mask = _check_mask(mask, "values", values)
    _check_finite("returns", returns, mask)
    if clip_eps is not None:
        clip_eps = _check_positive("clip_eps", clip_eps)
        if old_values is None:
            raise ValueError("old_values: clipping (clip_eps given) needs old_values, got None")
        old_values = _check_like("old_values", old_values, "values", values)
    return _value_loss_unchecked(values, returns, old_values, clip_eps, mask)


def _value_loss_unchecked(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_eps: float | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`value_loss` without argument checks (the trainer's inner loop)."""
    target = returns.detach()
    sq = (values - target).pow(2)
    info: dict[str, Tensor] = {}
    if clip_eps is not None and old_values is not None:
        eps, old = clip_eps, old_values.detach()
        clipped = old + (values - old).clamp(-eps, eps)
        sq = torch.max(sq, (clipped - target).pow(2))
        with torch.no_grad():
            far = ((values - old).abs() > eps).to(values.dtype)
            info["value_clip_fraction"] = masked_mean(far, mask)
    loss = 0.5 * (sq.mean() if mask is None else masked_mean(sq, mask))
    info["value_loss"] = loss.detach()
    return loss, info


def entropy_bonus(entropy: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean policy entropy :math:`\overline{H[\pi_\theta(\cdot|s_t)]}` over valid entries.

    Subtract ``coef * entropy_bonus(...)`` from the loss to encourage exploration.

    Args:
        entropy: ``(T, B)`` per-state entropies (differentiable).
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        A 0-dim tensor (to be maximised).
    """
    return masked_mean(_check_tensor("entropy", entropy), mask)


def normalize_advantages(adv: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    r"""Standardise advantages over the valid entries: :math:`(\hat A - \mu) / (\sigma + \epsilon)`.

    Mean and (Bessel-corrected) standard deviation are taken over valid entries; masked-out
    entries are set to 0. Subtracting the batch mean is a baseline shared by the whole batch, so
    the result is slightly biased for small batches; it is the standard practice of PPO code.

    Args:
        adv: ``(T, B)`` advantages, finite where valid.
        mask: ``(T, B)`` bool, ``False`` entries excluded.
        eps: added to the standard deviation.

    Returns:
        ``(T, B)`` normalised advantages.
    """
    adv = _check_tensor("adv", adv)
    mask = _check_mask(mask, "adv", adv)
    _check_finite("adv", adv, mask)
    if mask is None and adv.numel() > 1:
        return _normalize_unchecked(adv, eps)
    valid = torch.ones_like(adv, dtype=torch.bool) if mask is None else mask
    zero = torch.zeros((), dtype=adv.dtype, device=adv.device)
    n = valid.sum().to(adv.dtype)
    mean = torch.where(valid, adv, zero).sum() / n.clamp_min(1)
    var = torch.where(valid, (adv - mean).pow(2), zero).sum() / (n - 1).clamp_min(1)
    return torch.where(valid, (adv - mean) / (var.sqrt() + eps), zero)


def _normalize_unchecked(adv: Tensor, eps: float = 1e-8) -> Tensor:
    """:func:`normalize_advantages` without mask or checks (the trainer's inner loop)."""
    mean, std = adv.mean(), adv.std()
    return (adv - mean) / (std + eps)


def explained_variance(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Share of the target's variance explained by the prediction (logging only).

    .. math::  \mathrm{EV} = 1 - \frac{\operatorname{Var}[G - V]}{\operatorname{Var}[G]}

    1 is perfect, 0 is no better than a constant, negative is worse. NaN when the target is
    constant.

    Args:
        pred: ``(T, B)`` predicted values.
        target: ``(T, B)`` returns.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        A detached 0-dim tensor.
    """
    pred = _check_tensor("pred", pred).detach()
    target = _check_like("target", target, "pred", pred).detach()
    mask = _check_mask(mask, "pred", pred)
    if mask is not None:
        pred, target = pred[mask], target[mask]
    var_target = target.var(correction=0)
    ev = 1.0 - (target - pred).var(correction=0) / var_target
    return torch.where(var_target > 0, ev, torch.full_like(ev, float("nan")))
