r"""The surrogate loss: value equals the cost, gradient equals the score-function estimator.

Built with the magic box of DiCE (Foerster et al., 2018),
:math:`\boxdot(\ell) = \exp(\ell - \bot(\ell))` with :math:`\bot` the stop-gradient, whose value is
1 and whose derivative is :math:`\boxdot(\ell)\nabla\ell`:

.. math::  L = c\,\boxdot(\log p) + (1 - \boxdot(\log p))\, b,
           \qquad L = c,\qquad
           \nabla_\theta L = (c - b)\,\nabla_\theta \log p + \nabla_\theta c .

Because the magic box differentiates to itself, repeated differentiation also gives unbiased
estimates of higher derivatives of :math:`\mathbb{E}[c]` (``b`` enters as a constant, so it
changes no expectation). The construction is one fused autograd node
(:class:`logtrick.dice.ScoreTerm`); the baseline is applied by
:func:`logtrick.baselines.score_terms`, the one path every estimator shares.
"""

from __future__ import annotations

import torch
from torch import Tensor

from logtrick.baselines import resolve_baseline, score_terms
from logtrick.checks import check_finite

__all__ = ["approx_kl", "clipped_surrogate", "surrogate"]


def surrogate(
    cost: Tensor,
    log_prob: Tensor,
    baseline: object = None,
    sample_dim: int = 0,
    context: Tensor | None = None,
) -> Tensor:
    r"""Per-sample surrogate whose value is ``cost`` and whose gradient is the estimator.

    .. math::  \nabla_\theta L_k = (c_k - b_k)\, \nabla_\theta \log p(x_k;\theta)
               + \nabla_\theta c_k

    Requires: ``log_prob`` differentiable in the parameters; the samples themselves are not
    differentiated (draw them with ``sample()``). ``cost`` may carry its own gradient (a network
    that scores the sample gets its ordinary gradient). Unbiased for any baseline independent of
    the sample it multiplies; ``b`` enters as a constant (a tensor of critic values gets no
    gradient from here: train the critic with its own loss). Higher derivatives are DiCE's.

    Args:
        cost: ``(..., K, ...)`` cost of each sample, e.g. ``(K, B)``.
        log_prob: log-probability of each sample, the same shape as ``cost``.
        baseline: ``None``, a number, a tensor that broadcasts to ``cost`` without enlarging it
            (e.g. critic values ``(K, B)`` or ``(B,)``), a short name (``"moving_average"``,
            ``"leave_one_out"``), a function ``(cost, sample_dim, context) -> b`` or a baseline
            object (``lt.MovingAverage()``, ``lt.Learned(net)``, ``lt.OptimalScale(params)``).
        sample_dim: the dimension that indexes the samples (used by leave-one-out and moving
            averages).
        context: input of a ``Learned`` baseline.

    Returns:
        A tensor shaped like ``cost``; reduce it (``.mean()``) and call ``backward()``.

    References:
        Williams (1992), REINFORCE. Foerster et al. (2018), DiCE: The Infinitely Differentiable
        Monte Carlo Estimator.
    """
    if not isinstance(cost, Tensor) or not isinstance(log_prob, Tensor):
        raise TypeError(
            f"cost, log_prob: expected tensors, got {type(cost).__name__}, "
            f"{type(log_prob).__name__}"
        )
    if cost.shape != log_prob.shape:
        raise ValueError(
            f"cost and log_prob: expected the same shape (one log-probability per cost), got "
            f"cost {tuple(cost.shape)} and log_prob {tuple(log_prob.shape)}"
        )
    if cost.dim() and not -cost.dim() <= sample_dim < cost.dim():
        raise ValueError(f"sample_dim: {sample_dim} is out of range for cost of shape {cost.shape}")
    if not cost.is_floating_point():  # integer or bool costs: a float baseline must not truncate
        cost = cost.to(log_prob.dtype)
    check_finite("cost", cost)
    check_finite("log_prob", log_prob)  # -inf: a sample the distribution cannot produce
    out = score_terms(cost, log_prob, resolve_baseline(baseline), sample_dim, context)
    return out  # type: ignore[return-value]


def clipped_surrogate(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_eps: float | None,
    log_ratio_clamp: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-element clipped importance-weighted surrogate (PPO, GRPO): the one place it lives.

    .. math::  \rho = \exp(\log\pi_\theta - \log\pi_{\mathrm{old}}),\qquad
               \ell = -\min\big(\rho A,\ \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon) A\big)

    At :math:`\theta = \theta_{\mathrm{old}}` the gradient of :math:`\ell` is the score-function
    term :math:`-A\nabla\log\pi`; away from it the clip removes the incentive to move
    :math:`\rho` outside :math:`[1-\epsilon, 1+\epsilon]`. ``old_log_prob`` and ``advantages``
    are detached. No argument checks: the callers (``rl.losses.ppo_clip_loss``,
    ``sequence_surrogate``) check once at their boundary; the reduction (mean over valid
    transitions, per-sequence sums, token means) is theirs.

    Args:
        log_prob: log-probabilities under the current parameters, any shape.
        old_log_prob: log-probabilities at sampling time, the same shape.
        advantages: advantages broadcastable to that shape.
        clip_eps: :math:`\epsilon > 0`, or ``None`` for the unclipped ratio.
        log_ratio_clamp: clamp the log-ratio to ``[-c, c]`` before ``exp`` (half precision).

    Returns:
        ``(loss_terms, ratio, log_ratio)``, each of the broadcast shape; ``ratio`` and
        ``log_ratio`` carry gradients (detach them for logging).

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms. Shao et al. (2024),
        DeepSeekMath (GRPO).
    """
    adv = advantages.detach()
    log_ratio = log_prob - old_log_prob.detach()
    if log_ratio_clamp is not None:
        log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = log_ratio.exp()
    surr = ratio * adv
    if clip_eps is not None:
        surr = torch.minimum(surr, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)
    return -surr, ratio, log_ratio


def approx_kl(ratio: Tensor, log_ratio: Tensor) -> Tensor:
    r"""Per-element estimate of :math:`\mathrm{KL}(\pi_{\mathrm{old}} \| \pi_\theta)` on actions
    drawn from :math:`\pi_{\mathrm{old}}`, from :func:`clipped_surrogate`'s ratio and log-ratio:
    the diagnostic PPO and GRPO log (and ``target_kl`` reads).

    .. math::  k_3 = (\rho - 1) - \log\rho \;\ge 0,\qquad \rho = \pi_\theta / \pi_{\mathrm{old}}

    Unbiased, non-negative term by term, and zero only at :math:`\rho = 1`.

    References:
        Schulman (2020), Approximating KL Divergence (k3).
    """
    return (ratio - 1.0) - log_ratio
