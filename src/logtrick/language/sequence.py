r"""Sequence-level surrogate loss for models that emit tokens (language models, decoders).

A sequence :math:`y = (y_1, \dots, y_T)` sampled token by token has
:math:`\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})`, so its score is the sum of the
token scores, and the score-function (REINFORCE) estimator of the gradient of the expected
sequence reward is

.. math::  \nabla_\theta J \approx \frac{1}{B} \sum_b A_b \sum_t m_{b,t}\,
           \nabla_\theta \log \pi(y_{b,t} \mid x_b, y_{b,<t}),

with :math:`A_b` a per-sequence advantage (see :mod:`logtrick.language.advantages`) and
:math:`m` the mask of valid (non-padding) tokens. :func:`sequence_surrogate` builds the loss whose
gradient is the negative of this estimate, with the reductions, the clipped importance ratio
(PPO/GRPO) and the KL penalty used in RL fine-tuning of language models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from logtrick.checks import (
    check_bool_tensor,
    check_choice,
    check_finite,
    check_floating,
    check_ndim,
    check_nonnegative,
    check_positive,
    check_same_shape,
    check_shape_in,
)
from logtrick.surrogates import approx_kl, clipped_surrogate

__all__ = ["sequence_surrogate", "token_kl"]

REDUCTIONS = ("sequence_sum", "sequence_mean", "token_mean", "constant")
KL_ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to ``[-20, 20]`` before ``exp`` (``exp(20) ~ 4.9e8``)."""


def _check_log_probs(name: str, x: Tensor, mask: Tensor) -> None:
    """Log-probabilities are <= 0 where valid (a positive one is a logit or a sign error)."""
    bad = (x.detach() > 0) & mask
    if bool(bad.any()):
        raise ValueError(
            f"{name}: {int(bad.sum())} valid entries are positive (max {float(x[bad].max()):.4g}); "
            f"expected log-probabilities <= 0, e.g. from lt.token_log_probs (not logits)"
        )


def _validate(
    token_log_probs: Tensor, mask: Tensor, advantages: Tensor, others: dict[str, Tensor | None]
) -> None:
    """Argument checks at the boundary; only valid (``mask``) entries must be finite."""
    check_bool_tensor("mask", mask)
    check_ndim(
        "token_log_probs",
        check_floating("token_log_probs", token_log_probs),
        2,
        "(B, L) (sequences, tokens)",
    )
    check_same_shape("mask", mask, "token_log_probs", token_log_probs)
    check_finite("token_log_probs", token_log_probs, mask)
    _check_log_probs("token_log_probs", token_log_probs, mask)
    for name, x in others.items():
        if x is not None:
            check_same_shape(name, check_floating(name, x), "token_log_probs", token_log_probs)
            check_finite(name, x, mask)
            if name.endswith("log_probs"):
                _check_log_probs(name, x, mask)
    b, length = token_log_probs.shape
    check_floating("advantages", advantages)
    check_shape_in("advantages", advantages, [(b,), (b, length)], "per sequence or per token")
    check_finite("advantages", advantages, mask if advantages.dim() == 2 else None)


def _check_options(
    reduction: str, constant: float | None, clip_eps: float | None, kl: tuple[float, str, bool]
) -> None:
    kl_coef, kl_estimator, has_ref = kl
    check_choice("reduction", reduction, REDUCTIONS)
    if constant is not None:
        if reduction != "constant":
            raise ValueError(
                f"constant: only used with reduction='constant', got constant={constant!r} "
                f"with reduction={reduction!r}"
            )
        check_positive("constant", constant)
    if clip_eps is not None:
        check_positive("clip_eps", clip_eps)
    check_nonnegative("kl_coef", kl_coef)
    if kl_coef > 0.0 and not has_ref:
        raise ValueError("ref_token_log_probs: kl_coef > 0 needs the reference log-probabilities")
    check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)


def _masked(x: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` with its masked-out entries replaced by 0 *before* any arithmetic, in ``dtype``."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).to(dtype)


def _reduce(per_token: Tensor, mask: Tensor, reduction: str, constant: float | None) -> Tensor:
    """Masked reduction of ``(B, L)`` per-token losses to a scalar."""
    masked = torch.where(mask, per_token, torch.zeros_like(per_token))
    if reduction == "token_mean":
        return masked.sum() / mask.sum().clamp_min(1)
    per_seq = masked.sum(1)
    if reduction == "sequence_mean":
        per_seq = per_seq / mask.sum(1).clamp_min(1)
    elif reduction == "constant":
        per_seq = per_seq / (mask.shape[1] if constant is None else constant)
    return per_seq.mean() if per_seq.numel() else per_seq.sum()


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum().detach() / mask.sum().clamp_min(1)


def token_kl(token_log_probs: Tensor, ref_token_log_probs: Tensor, estimator: str = "k3") -> Tensor:
    r"""Per-token KL estimate, :math:`\mathrm{KL}(\pi \| \pi_{ref})` on tokens drawn from π.

    With :math:`x = \log\pi_{ref}(y_t) - \log\pi(y_t)`:

    .. math::  k_1 = -x, \qquad k_2 = \tfrac12 x^2, \qquad k_3 = e^{x} - x - 1 \;\ge 0.

    :math:`k_1` and :math:`k_3` are unbiased for the KL (:math:`k_3` with lower variance when
    the policies are close); :math:`k_2` is biased but non-negative and close for nearby
    policies. Their gradients, as loss terms, differ: :math:`\mathbb{E}_\pi[\nabla k_1] = 0`,
    :math:`\mathbb{E}_\pi[\nabla k_2] = \nabla\mathrm{KL}(\pi\|\pi_{ref})` and
    :math:`\mathbb{E}_\pi[\nabla k_3] = \nabla\mathrm{KL}(\pi_{ref}\|\pi)` (per token, the
    prefix held fixed). :math:`x` is clamped to ``[-20, 20]`` before ``exp`` (in :math:`k_3` only).

    Args:
        token_log_probs: ``(...)`` :math:`\log\pi(y_t)`, float32 or wider (differentiable).
        ref_token_log_probs: the same shape, :math:`\log\pi_{ref}(y_t)` (not differentiated).
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        The per-token estimates, shaped like ``token_log_probs``.

    References:
        Schulman (2020), Approximating KL Divergence (blog post: k1, k2, k3). Shao et al.
        (2024), DeepSeekMath (GRPO's k3 penalty).
    """
    check_choice("kl_estimator", estimator, KL_ESTIMATORS)
    check_floating("token_log_probs", token_log_probs)
    check_same_shape("ref_token_log_probs", ref_token_log_probs, "token_log_probs", token_log_probs)
    x = ref_token_log_probs.detach() - token_log_probs
    if estimator == "k1":
        return -x
    if estimator == "k2":
        return 0.5 * x.pow(2)
    x = x.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return x.exp() - x - 1.0


def sequence_surrogate(
    token_log_probs: Tensor,
    mask: Tensor,
    advantages: Tensor,
    reduction: str = "sequence_sum",
    constant: float | None = None,
    old_token_log_probs: Tensor | None = None,
    clip_eps: float | None = None,
    ref_token_log_probs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    kl_in_reward: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Policy-gradient loss of sampled token sequences: REINFORCE, RLOO, (Dr.) GRPO, DAPO, PPO.

    Per valid token, with :math:`\rho_{b,t} = \exp(\log\pi - \log\pi_{old})` (exactly 1 when
    ``old_token_log_probs`` is ``None``: the sampling policy is the current one) and
    :math:`A_{b,t}` the sequence's advantage :math:`A_b` (or a per-token advantage),

    .. math::  \ell_{b,t} = -\min\big(\rho_{b,t} A_{b,t},\
               \operatorname{clip}(\rho_{b,t}, 1-\epsilon, 1+\epsilon) A_{b,t}\big)
               + \beta\, k_{b,t},

    with :math:`k` the per-token KL estimate of :func:`token_kl` (``k1``, ``k2`` or ``k3``).
    With ``kl_in_reward=True`` the KL is folded into the reward instead of the loss: the
    penalty is :math:`A_{b,t} \leftarrow A_{b,t} - \beta \sum_{s \ge t} k_{b,s}` (its reward-to-go,
    evaluated at the sampling policy and detached); with ``k1`` this gives an unbiased estimate
    of :math:`-\beta\nabla\mathrm{KL}(\pi\|\pi_{ref})` of whole sequences. As a loss term,
    ``k2``'s gradient is that of the per-token KL and ``k3``'s that of the reverse KL (GRPO).
    The reductions over the valid tokens (:math:`|o_b|` tokens in sequence :math:`b`):

    .. math::  \text{sequence\_sum: } \tfrac1B \textstyle\sum_b \sum_t \ell_{b,t} \qquad
               \text{sequence\_mean: } \tfrac1B \textstyle\sum_b \tfrac{1}{|o_b|}
               \sum_t \ell_{b,t} \\
               \text{token\_mean: } \frac{\sum_{b,t} \ell_{b,t}}{\sum_b |o_b|} \qquad
               \text{constant: } \tfrac{1}{B\,c} \textstyle\sum_b \sum_t \ell_{b,t}

    Without clipping and KL the gradient is :math:`-\sum_t A_b \nabla\log\pi(y_{b,t})` reduced
    as chosen. ``sequence_sum`` is the unbiased REINFORCE estimator for whole sequences and
    ``constant`` (Dr. GRPO) the same up to the factor :math:`1/c`. ``sequence_mean`` (GRPO)
    weighs a sequence by :math:`1/|o_b|`, which is biased toward short correct and long wrong
    responses (the length bias of Liu et al. 2025); ``token_mean`` (DAPO) divides by the batch's
    token count, random and correlated with the samples (biased, but every token weighs the
    same). Log-ratios are computed in float32 (or float64 for float64 inputs) and clamped to
    ``[-20, 20]`` before ``exp``, so half-precision inputs do not overflow; the clamp also cuts
    the gradient of a token whose log-ratio lies outside that range.

    Masked-out entries of every ``(B, L)`` input are replaced by 0 before any arithmetic, so
    they may hold anything, NaN and inf included: they change neither the loss nor ``info``,
    and the gradient with respect to ``token_log_probs`` is exactly 0 there. A graph *upstream*
    of ``token_log_probs`` multiplies that 0 by its own local derivative, which is NaN where it
    produced a non-finite value (``log(0)``, a ``log_softmax`` over a row of ``-inf`` logits):
    compute the token log-probs with :func:`logtrick.language.token_log_probs`, which gives
    masked positions a zero gradient without evaluating them.

    Args:
        token_log_probs: ``(B, L)`` log-probabilities of the sampled tokens under the current
            policy, differentiable.
        mask: ``(B, L)`` bool, ``True`` for valid tokens.
        advantages: ``(B,)`` one advantage per sequence, or ``(B, L)`` one per token (PPO with
            a value function); finite where valid (detached here).
        reduction: ``"sequence_sum"``, ``"sequence_mean"``, ``"token_mean"`` or ``"constant"``.
        constant: the divisor :math:`c` of ``"constant"`` (default ``L``, the padded length).
        old_token_log_probs: ``(B, L)`` log-probabilities under the sampling policy, for
            several updates per batch; detached.
        clip_eps: :math:`\epsilon` of the clipped ratio; ``None`` for no clipping.
        ref_token_log_probs: ``(B, L)`` log-probabilities under the reference policy; detached.
        kl_coef: :math:`\beta \ge 0`; ``> 0`` needs ``ref_token_log_probs``.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        kl_in_reward: fold the KL into the advantages (``True``) or add it to the loss.

    Returns:
        ``(loss, info)``: a scalar loss (float32 for half inputs), and detached 0-d tensors
        ``info["policy_loss"]`` (the loss without a KL loss term), ``info["ratio_mean"]``
        (mean :math:`\rho`), ``info["clip_fraction"]`` (fraction of valid tokens with
        :math:`|\rho - 1| > \epsilon`, as in :func:`logtrick.rl.losses.ppo_clip_loss`; 0 without
        clipping), ``info["approx_kl"]`` (:math:`k_3` estimate of
        :math:`\mathrm{KL}(\pi_{old}\|\pi)`), ``info["kl"]`` (mean per-token KL estimate to the
        reference by ``kl_estimator``, 0 without one) and ``info["tokens"]`` (number of valid
        tokens), all means over valid tokens.

    References:
        Williams (1992), REINFORCE. Schulman et al. (2017), Proximal Policy Optimization.
        Shao et al. (2024), DeepSeekMath (GRPO). Ahmadian et al. (2024), Back to Basics:
        Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs (RLOO).
        Yu et al. (2025), DAPO (token-level mean). Liu et al. (2025), Understanding R1-Zero-Like
        Training (Dr. GRPO: constant divisor, length and difficulty biases). Schulman (2020),
        Approximating KL Divergence (blog post: k1, k2, k3).
    """
    others = {
        "old_token_log_probs": old_token_log_probs,
        "ref_token_log_probs": ref_token_log_probs,
    }
    _validate(token_log_probs, mask, advantages, others)
    has_ref = ref_token_log_probs is not None
    _check_options(reduction, constant, clip_eps, (kl_coef, kl_estimator, has_ref))
    work = torch.promote_types(token_log_probs.dtype, torch.float32)
    lp = _masked(token_log_probs, mask, work)
    old = lp.detach() if old_token_log_probs is None else _masked(old_token_log_probs, mask, work)
    old = old.detach()
    adv = advantages.detach()
    adv = _masked(adv[:, None].expand(mask.shape) if adv.dim() == 1 else adv, mask, work)
    kl = torch.zeros_like(lp)
    if ref_token_log_probs is not None:
        ref = _masked(ref_token_log_probs.detach(), mask, work)
        kl = torch.where(mask, token_kl(lp, ref, kl_estimator), 0.0)
        if kl_in_reward and kl_coef > 0.0:
            penalty = torch.where(mask, token_kl(old, ref, kl_estimator), 0.0)
            adv = adv - kl_coef * penalty.flip(1).cumsum(1).flip(1)  # reward-to-go
    per_token, ratio, log_ratio = clipped_surrogate(lp, old, adv, clip_eps, LOG_RATIO_CLAMP)
    policy_loss = _reduce(per_token, mask, reduction, constant)
    loss = policy_loss
    if kl_coef > 0.0 and not kl_in_reward:
        loss = _reduce(per_token + kl_coef * kl, mask, reduction, constant)
    outside = (ratio - 1.0).abs() > (math.inf if clip_eps is None else clip_eps)
    info = {
        "policy_loss": policy_loss.detach(),
        "ratio_mean": _masked_mean(ratio, mask),
        "clip_fraction": _masked_mean(outside.to(work), mask),
        "approx_kl": _masked_mean(approx_kl(ratio, log_ratio), mask),
        "kl": _masked_mean(kl, mask),
        "tokens": mask.sum(),
    }
    return loss, info
