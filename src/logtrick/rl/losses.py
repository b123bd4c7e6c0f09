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

from logtrick.baselines import resolve_baseline, score_terms
from logtrick.checks import (
    check_bool_tensor,
    check_finite,
    check_positive,
    check_same_shape,
    check_tensor,
)
from logtrick.surrogates import approx_kl, clipped_surrogate

__all__ = [
    "advantage_moments",
    "entropy_bonus",
    "explained_variance",
    "masked_mean",
    "normalize_advantages",
    "ppo_clip_loss",
    "reinforce_loss",
    "value_loss",
]

_PER_STEP = "one entry per time step and env"


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
    x, mask = check_aligned("x", x, mask, _PER_STEP)
    if mask is None:
        return x.mean()
    total = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / mask.sum().clamp_min(1).to(x.dtype)


def reinforce_loss(
    log_probs: Tensor,
    returns: Tensor,
    mask: Tensor | None = None,
    *,
    baseline: Tensor | None = None,
    check: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The REINFORCE / vanilla policy-gradient loss: the estimator core's surrogate of the cost
    :math:`-G_t` with baseline :math:`-b_t`.

    .. math::  L(\theta) = \frac{1}{N}\sum_{(t,b)\ \mathrm{valid}} \big[-G_t\,
               \boxdot(\log\pi_\theta(a_t|s_t)) + (1 - \boxdot(\log\pi_\theta(a_t|s_t)))
               (-b_t)\big],\qquad
               -\nabla_\theta L = \frac{1}{N}\sum (G_t - b_t)\,\nabla_\theta
               \log\pi_\theta(a_t|s_t)

    (:func:`logtrick.surrogates.surrogate`: value :math:`-\overline{G}`, the negative mean
    return-to-go; gradient the score-function estimate of :math:`-\nabla J` with the advantage
    :math:`\hat A_t = G_t - b_t`). Requires: ``log_probs`` differentiable in the policy
    parameters, computed at the actions that were *sampled*; ``returns`` and ``baseline`` are
    constants (detached); the baseline must not depend on the action it weights (a critic
    :math:`V(s_t)` or a batch mean). Passing advantages as ``returns`` and no baseline gives the
    same gradient.

    Args:
        log_probs: ``(T, B)`` :math:`\log \pi_\theta(a_t|s_t)`.
        returns: ``(T, B)`` :math:`G_t` (reward-to-go, or GAE's λ-return), finite.
        mask: ``(T, B)`` bool, ``False`` entries excluded.
        baseline: ``(T, B)`` :math:`b_t`, or ``None`` for :math:`b = 0`.
        check: validate the arguments (types, shapes, finiteness: one host sync); the trainer
            passes ``False`` in its inner loop, having checked once per update.

    Returns:
        ``(loss, info)`` with ``info = {"policy_loss"}``.

    References:
        Williams (1992), Simple statistical gradient-following algorithms for connectionist
        reinforcement learning. Sutton et al. (2000), Policy gradient methods for reinforcement
        learning with function approximation. Foerster et al. (2018), DiCE.
    """
    if check:
        log_probs, mask = check_aligned("log_probs", log_probs, mask, _PER_STEP,
                                        returns=returns, baseline=baseline)  # fmt: skip
    base = resolve_baseline(None if baseline is None else -baseline.detach())
    terms = score_terms(-returns.detach(), log_probs, base, 0, None)
    assert terms is not None  # with_cost=True (the default) always gives terms
    loss = terms.mean() if mask is None else masked_mean(terms, mask)
    return loss, {"policy_loss": loss.detach()}


def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Tensor | None = None,
    *,
    check: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The PPO clipped surrogate loss (:func:`logtrick.surrogates.clipped_surrogate`).

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
        check: validate the arguments (one host sync); ``False`` in the trainer's inner loop.

    Returns:
        ``(loss, info)`` with ``info = {"policy_loss", "approx_kl", "clip_fraction",
        "ratio_mean"}``.

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms. Schulman (2020),
        Approximating KL divergence (blog post; the k3 estimator).
    """
    if check:
        others = {"old_log_probs": old_log_probs, "advantages": advantages}
        log_probs, mask = check_aligned("log_probs", log_probs, mask, _PER_STEP, **others)
        clip_eps = check_positive("clip_eps", clip_eps)
    terms, ratio, log_ratio = clipped_surrogate(log_probs, old_log_probs, advantages, clip_eps)
    loss = terms.mean() if mask is None else masked_mean(terms, mask)
    with torch.no_grad():
        info = {
            "policy_loss": loss.detach(),
            "approx_kl": masked_mean(approx_kl(ratio, log_ratio), mask),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_eps).to(ratio.dtype), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, info


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_eps: float | None = None,
    mask: Tensor | None = None,
    *,
    check: bool = True,
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
        check: validate the arguments (one host sync); ``False`` in the trainer's inner loop.

    Returns:
        ``(loss, info)`` with ``info = {"value_loss"}`` and, when clipping,
        ``"value_clip_fraction"`` (share of entries with :math:`|V_\theta - V_{\mathrm{old}}| >
        \epsilon`).

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms; Engstrom et al. (2020),
        Implementation Matters in Deep Policy Gradients (on value clipping).
    """
    if check:
        values, mask = check_aligned("values", values, mask, _PER_STEP, returns=returns,
                                     old_values=old_values)  # fmt: skip
        if clip_eps is not None:
            clip_eps = check_positive("clip_eps", clip_eps)
            if old_values is None:
                raise ValueError("old_values: clipping (clip_eps given) needs old_values, got None")
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
    return masked_mean(check_tensor("entropy", entropy), mask)


def advantage_moments(
    adv: Tensor, mask: Tensor | None = None, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    r"""Mean and inverse scale of the valid advantages: :math:`(\mu,\ 1 / (\sigma + \epsilon))`.

    Standardising :math:`(\hat A - \mu)/(\sigma + \epsilon)` is a baseline shared by the whole
    batch (:math:`\mu`) and a step size (:math:`1/(\sigma+\epsilon)`): the trainer applies it to
    the REINFORCE surrogate as exactly that. :math:`\sigma` is Bessel-corrected (0 for a single
    entry).

    Args:
        adv: ``(T, B)`` advantages (any shape), finite where valid.
        mask: ``(T, B)`` bool, ``False`` entries excluded.
        eps: added to the standard deviation.

    Returns:
        ``(mean, inverse_scale)``, 0-dim detached tensors.
    """
    adv = adv.detach()
    if mask is None:
        mean = adv.mean()
        std = adv.std(correction=1 if adv.numel() > 1 else 0)
        return mean, 1.0 / (std + eps)
    zero = torch.zeros((), dtype=adv.dtype, device=adv.device)
    n = mask.sum().to(adv.dtype)
    mean = torch.where(mask, adv, zero).sum() / n.clamp_min(1)
    var = torch.where(mask, (adv - mean).pow(2), zero).sum() / (n - 1).clamp_min(1)
    return mean, 1.0 / (var.sqrt() + eps)


def normalize_advantages(
    adv: Tensor, mask: Tensor | None = None, eps: float = 1e-8, *, check: bool = True
) -> Tensor:
    r"""Standardise advantages over the valid entries: :math:`(\hat A - \mu) / (\sigma + \epsilon)`.

    Mean and (Bessel-corrected) standard deviation are taken over valid entries
    (:func:`advantage_moments`); masked-out entries are set to 0. Subtracting the batch mean is a
    baseline shared by the whole batch, so the result is slightly biased for small batches; it is
    the standard practice of PPO code.

    Args:
        adv: ``(T, B)`` advantages, finite where valid.
        mask: ``(T, B)`` bool, ``False`` entries excluded.
        eps: added to the standard deviation.
        check: validate the arguments (one host sync); ``False`` in the trainer's inner loop.

    Returns:
        ``(T, B)`` normalised advantages.
    """
    if check:
        adv, mask = check_aligned("adv", adv, mask, _PER_STEP, adv=adv)
    mean, inverse_scale = advantage_moments(adv, mask, eps)
    out = (adv - mean) * inverse_scale
    return out if mask is None else torch.where(mask, out, torch.zeros_like(out))


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
    pred, mask = check_aligned("pred", pred, mask, _PER_STEP)
    target = check_same_shape("target", target, "pred", pred, _PER_STEP).detach()
    pred = pred.detach()
    if mask is not None:
        pred, target = pred[mask], target[mask]
    var_target = target.var(correction=0)
    ev = 1.0 - (target - pred).var(correction=0) / var_target
    return torch.where(var_target > 0, ev, torch.full_like(ev, float("nan")))


def check_aligned(
    ref_name: str, ref: object, mask: object = None, what: str = "", **others: object
) -> tuple[Tensor, Tensor | None]:
    """Tensors that go together entry by entry (e.g. per time step and env).

    ``ref`` is a tensor; ``mask`` is ``None`` or a bool tensor of its shape; each of ``others``
    (``None`` skipped) is a tensor of its shape, finite where ``mask`` is True. ``what`` says
    what an entry is, for the messages. Returns ``(ref, mask)``.
    """
    ref = check_tensor(ref_name, ref)
    if mask is not None:
        mask = check_same_shape("mask", check_bool_tensor("mask", mask), ref_name, ref, what)
    for name, x in others.items():
        if x is not None:
            check_finite(name, check_same_shape(name, x, ref_name, ref, what), mask)
    return ref, mask
