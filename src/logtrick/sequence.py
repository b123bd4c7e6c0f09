r"""Sequence-level surrogate loss for models that emit tokens (language models, decoders).

A sequence :math:`y = (y_1, \dots, y_T)` sampled token by token has
:math:`\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})`, so its score is the sum of the
token scores, and the score-function (REINFORCE) estimator of the gradient of the expected
sequence reward is

.. math::  \nabla_\theta J \approx \frac{1}{B} \sum_b A_b \sum_t m_{b,t}\,
           \nabla_\theta \log \pi(y_{b,t} \mid x_b, y_{b,<t}),

with :math:`A_b` a per-sequence advantage (see :mod:`logtrick.advantages`) and :math:`m` the mask
of valid (non-padding) tokens. :func:`sequence_surrogate` builds the loss whose gradient is the
negative of this estimate, with the reductions, the clipped importance ratio (PPO/GRPO) and the KL
penalty used in RL fine-tuning of language models.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from logtrick.surrogate import check_finite, clipped_surrogate

__all__ = ["sequence_surrogate"]

REDUCTIONS = ("sequence_sum", "token_mean", "constant")
KL_ESTIMATORS = ("k1", "k3")
LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to ``[-20, 20]`` in float32 before ``exp`` (``exp(20) ~ 4.9e8``)."""


def _check_log_probs(name: str, x: object, shape: tuple[int, ...] | None, mask: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a tensor of shape (B, L), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    want = "(B, L)" if shape is None else str(shape)
    if x.dim() != 2 or (shape is not None and tuple(x.shape) != shape):
        raise ValueError(f"{name}: expected shape {want} (sequences, tokens), got {tuple(x.shape)}")
    if x.shape == mask.shape:
        bad = mask & ~x.detach().isfinite()
        if bad.any():
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{name}: {int(bad.sum())} valid tokens have NaN or inf log-probabilities "
                f"(first at sequence {b}, token {t}); only masked-out tokens may be non-finite"
            )


def _check_inputs(
    token_log_probs: Tensor, mask: Tensor, advantages: Tensor, others: dict[str, Tensor | None]
) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected a bool tensor (True for valid tokens), got {got}")
    _check_log_probs("token_log_probs", token_log_probs, None, mask)
    shape = tuple(token_log_probs.shape)
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"mask: expected the shape of token_log_probs {shape}, got {tuple(mask.shape)}"
        )
    for name, x in others.items():
        if x is not None:
            _check_log_probs(name, x, shape, mask)
    if not isinstance(advantages, Tensor) or not advantages.is_floating_point():
        got = advantages.dtype if isinstance(advantages, Tensor) else type(advantages).__name__
        raise TypeError(f"advantages: expected a floating tensor of shape ({shape[0]},), got {got}")
    if tuple(advantages.shape) != shape[:1]:
        raise ValueError(
            f"advantages: expected shape ({shape[0]},), one advantage per sequence of "
            f"token_log_probs {shape}, got {tuple(advantages.shape)}"
        )
    check_finite("advantages", advantages)


def _check_options(
    reduction: str, constant: float | None, clip_eps: float | None, kl: tuple[float, str, bool]
) -> None:
    kl_coef, kl_estimator, has_ref = kl
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: unknown {reduction!r}; expected one of {REDUCTIONS}")
    if constant is not None and (reduction != "constant" or not 0.0 < constant < float("inf")):
        raise ValueError(
            f"constant: expected a finite number > 0 with reduction='constant', got "
            f"constant={constant!r} with reduction={reduction!r}"
        )
    if clip_eps is not None and not 0.0 < clip_eps < float("inf"):
        raise ValueError(f"clip_eps: expected None or a finite number > 0, got {clip_eps!r}")
    if not 0.0 <= kl_coef < float("inf"):
        raise ValueError(f"kl_coef: expected a finite number >= 0, got {kl_coef!r}")
    if kl_coef > 0.0 and not has_ref:
        raise ValueError("ref_token_log_probs: kl_coef > 0 needs the reference log-probabilities")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator: unknown {kl_estimator!r}; expected one of {KL_ESTIMATORS}")


def _reduce(per_token: Tensor, mask: Tensor, reduction: str, constant: float | None) -> Tensor:
    """Masked reduction of ``(B, L)`` per-token losses to a scalar."""
    masked = torch.where(mask, per_token, torch.zeros_like(per_token))
    if reduction == "token_mean":
        return masked.sum() / mask.sum().clamp_min(1)
    per_seq = masked.sum(1)
    if reduction == "constant":
        per_seq = per_seq / (mask.shape[1] if constant is None else constant)
    return per_seq.mean() if per_seq.numel() else per_seq.sum()


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum().detach() / mask.sum().clamp_min(1)


def _kl(ref: Tensor, lp: Tensor, estimator: str) -> Tensor:
    r"""Per-token estimate of :math:`\mathrm{KL}(\pi \| \pi_{ref})` from samples of :math:`\pi`."""
    log_r = (ref - lp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # log(pi_ref / pi)
    if estimator == "k1":
        return -log_r
    return log_r.exp() - log_r - 1.0


def _policy_terms(
    lp: Tensor, old: Tensor, adv: Tensor, clip_eps: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token ``-min(rho A, clip(rho) A)``, ``rho`` and ``log rho``."""
    return clipped_surrogate(lp, old, adv, clip_eps, log_ratio_clamp=LOG_RATIO_CLAMP)


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
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Policy-gradient loss for sampled token sequences, with one advantage per sequence.

    Per valid token, with :math:`\rho_{b,t} = \exp(\log\pi - \log\pi_{old})` (exactly 1 when
    ``old_token_log_probs`` is ``None``: the sampling policy is the current one),

    .. math::  \ell_{b,t} = -\min\big(\rho_{b,t} A_b,\
               \operatorname{clip}(\rho_{b,t}, 1-\epsilon, 1+\epsilon) A_b\big)
               + \beta\, k_{b,t},

    :math:`k_1 = \log(\pi / \pi_{ref})` or :math:`k_3 = \pi_{ref}/\pi - \log(\pi_{ref}/\pi) - 1
    \ge 0` (both unbiased for :math:`\mathrm{KL}(\pi\|\pi_{ref})` under samples of :math:`\pi`;
    :math:`k_3` has lower variance). As losses their gradients differ: :math:`\nabla k_1 =
    \nabla\log\pi` has mean zero on-policy, while :math:`\mathbb{E}_\pi[\nabla k_3] =
    \nabla\,\mathrm{KL}(\pi_{ref}\|\pi)`. Reductions over the valid tokens:

    .. math::  \text{sequence\_sum: } \tfrac1B \textstyle\sum_b \sum_t \ell_{b,t} \qquad
               \text{token\_mean: } \frac{\sum_{b,t} \ell_{b,t}}{\sum_{b,t} m_{b,t}} \qquad
               \text{constant: } \tfrac{1}{B\,c} \textstyle\sum_b \sum_t \ell_{b,t}

    Without clipping and KL the gradient is :math:`-\sum_t A_b \nabla\log\pi(y_{b,t})` reduced
    as chosen: ``sequence_sum`` is the unbiased REINFORCE estimator for whole sequences;
    ``constant`` is the same up to the factor :math:`1/c` (no length bias); ``token_mean`` divides
    by the batch's token count, which is random and correlated with the samples, so it is biased
    but weighs every token equally (long sequences are not down-weighted, as they are by a
    per-sequence token mean). Log-ratios are computed in float32 (or float64 for float64 inputs)
    and clamped to ``[-20, 20]`` before ``exp``, so half-precision inputs do not overflow; the
    clamp also cuts the gradient of a token whose log-ratio lies outside that range.

    Args:
        token_log_probs: ``(B, L)`` log-probabilities of the sampled tokens under the current
            policy, differentiable. Masked-out entries may hold anything, even NaN.
        mask: ``(B, L)`` bool, ``True`` for valid tokens.
        advantages: ``(B,)`` one advantage per sequence, finite (detached here).
        reduction: ``"sequence_sum"``, ``"token_mean"`` or ``"constant"``.
        constant: the divisor :math:`c` of ``"constant"`` (default ``L``, the padded length).
        old_token_log_probs: ``(B, L)`` log-probabilities under the sampling policy, for
            several updates per batch; detached.
        clip_eps: :math:`\epsilon` of the clipped ratio; ``None`` for no clipping.
        ref_token_log_probs: ``(B, L)`` log-probabilities under the reference policy; detached.
        kl_coef: :math:`\beta \ge 0`; ``> 0`` needs ``ref_token_log_probs``.
        kl_estimator: ``"k1"`` or ``"k3"``.

    Returns:
        ``(loss, info)``: a scalar loss (float32 for half inputs), and detached 0-d tensors
        ``info["policy_loss"]`` (the loss without the KL term), ``info["ratio_mean"]`` (mean
        :math:`\rho`), ``info["clip_fraction"]`` (fraction of valid tokens with
        :math:`|\rho - 1| > \epsilon`, as in :func:`logtrick.rl.losses.ppo_clip_loss`; 0 without
        clipping), ``info["approx_kl"]`` (:math:`k_3` estimate
        of :math:`\mathrm{KL}(\pi_{old}\|\pi)`), ``info["kl"]`` (mean per-token KL to the
        reference, 0 without one) and ``info["tokens"]`` (number of valid tokens), all means
        over valid tokens.

    References:
        Williams (1992), REINFORCE. Schulman et al. (2017), Proximal Policy Optimization.
        Shao et al. (2024), DeepSeekMath (GRPO). Ahmadian et al. (2024), Back to Basics:
        Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs (RLOO).
        Yu et al. (2025), DAPO (token-level mean). Liu et al. (2025), Understanding R1-Zero-Like
        Training (Dr. GRPO: constant divisor). Schulman (2020), Approximating KL Divergence
        (blog post: k1, k3).
    """
    others = {
        "old_token_log_probs": old_token_log_probs,
        "ref_token_log_probs": ref_token_log_probs,
    }
    _check_inputs(token_log_probs, mask, advantages, others)
    has_ref = ref_token_log_probs is not None
    _check_options(reduction, constant, clip_eps, (kl_coef, kl_estimator, has_ref))
    work = torch.promote_types(token_log_probs.dtype, torch.float32)
    zero = torch.zeros((), dtype=work, device=token_log_probs.device)
    lp = torch.where(mask, token_log_probs.to(work), zero)
    old = lp if old_token_log_probs is None else old_token_log_probs.to(work)
    old = torch.where(mask, old.detach(), zero)
    adv = advantages.detach().to(work)[:, None]
    per_token, ratio, log_ratio = _policy_terms(lp, old, adv, clip_eps)
    policy_loss = _reduce(per_token, mask, reduction, constant)
    loss, kl = policy_loss, torch.zeros_like(lp)
    if ref_token_log_probs is not None:
        ref = torch.where(mask, ref_token_log_probs.detach().to(work), zero)
        kl = _kl(ref, lp, kl_estimator)
        if kl_coef > 0.0:
            loss = _reduce(per_token + kl_coef * kl, mask, reduction, constant)
    outside = (ratio - 1.0).abs() > (math.inf if clip_eps is None else clip_eps)
    info = {
        "policy_loss": policy_loss.detach(),
        "ratio_mean": _masked_mean(ratio, mask),
        "clip_fraction": _masked_mean(outside.to(work), mask),
        "approx_kl": _masked_mean(ratio - 1.0 - log_ratio, mask),
        "kl": _masked_mean(kl, mask),
        "tokens": mask.sum(),
    }
    return loss, info
