r"""VIMCO: leave-one-out learning signals for multi-sample (importance-weighted) bounds.

For K samples :math:`h_k \sim q(h\mid x)` with log-weights
:math:`\log w_k = \log p(x, h_k) - \log q(h_k\mid x)`, the importance-weighted bound is

.. math::  \hat L = \log \frac1K \sum_{k=1}^K w_k,\qquad
           \nabla \hat L = \sum_k \hat L\, \nabla\log q(h_k)
           + \sum_k \tilde w_k\, \nabla \log w_k,\quad \tilde w_k = w_k / \textstyle\sum_j w_j,

and VIMCO replaces the learning signal :math:`\hat L` of sample k by
:math:`\hat L - \hat L_{-k}`, where :math:`\hat L_{-k}` is the bound with :math:`w_k` replaced by
the geometric mean of the others: independent of :math:`h_k`, so the gradient stays unbiased.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from logtrick.checks import check_finite, check_same_shape, check_tensor
from logtrick.dice import magic_box

__all__ = ["vimco_signals", "vimco_surrogate"]


def vimco_signals(log_weights: Tensor) -> Tensor:
    r"""Per-sample learning signals :math:`\hat L - \hat L_{-k}` (detached).

    .. math::  \hat L_{-k} = \log \frac1K\Big(\sum_{j\neq k} w_j
               + \exp\Big(\frac{1}{K-1}\sum_{j\neq k}\log w_j\Big)\Big)

    Args:
        log_weights: ``(K, ...)`` log importance weights, samples along dim 0, K >= 2.

    Returns:
        ``(K, ...)`` signals, computed in log space (stable for large log-weights).

    References:
        Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives, eq. (10).
    """
    check_sample_dim("log_weights", log_weights, 2)
    check_finite("log_weights", log_weights)
    lw = log_weights.detach()
    k = lw.shape[0]
    others_mean = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # (K, ...)
    eye = torch.eye(k, dtype=torch.bool, device=lw.device).reshape((k, k) + (1,) * (lw.dim() - 1))
    # row i: the log-weights with entry i replaced by the geometric mean of the others
    replaced = torch.where(eye, others_mean.unsqueeze(1), lw.unsqueeze(0))
    bound = torch.logsumexp(lw, 0) - math.log(k)
    bound_loo = torch.logsumexp(replaced, 1) - math.log(k)
    return bound - bound_loo


def vimco_surrogate(log_weights: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor]:
    r"""The importance-weighted bound and a surrogate whose gradient is the VIMCO estimator.

    .. math::  \text{surrogate} = \hat L + \sum_k \bot(\hat L - \hat L_{-k})
               \,\big(\boxdot(\log q(h_k)) - 1\big),\qquad
               \nabla\,\text{surrogate} = \sum_k (\hat L - \hat L_{-k})\nabla\log q(h_k)
               + \sum_k \tilde w_k\,\nabla\log w_k

    The surrogate's value equals the bound (magic box). Maximise it: ``(-surrogate).mean()``
    is the loss. Requires: ``log_q`` differentiable in q's parameters, ``log_weights`` carrying
    its own graph (through :math:`\log p(x, h_k)` and :math:`-\log q(h_k)`); the samples
    :math:`h_k` are discrete or otherwise drawn without gradient (``sample()``). Unbiased for the
    gradient of :math:`\mathbb{E}_q[\hat L]`.

    Args:
        log_weights: ``(K, B)`` (or ``(K, ...)``) :math:`\log p(x, h_k) - \log q(h_k\mid x)`.
        log_q: ``(K, B)`` :math:`\log q(h_k\mid x)`, the same shape.

    Returns:
        ``(bound, surrogate)``: ``bound`` ``(B,)`` detached, the reported value
        :math:`\log\frac1K\sum_k w_k`; ``surrogate`` ``(B,)``, the objective to differentiate.

    References:
        Mnih & Rezende (2016), Variational Inference for Monte Carlo Objectives; Burda, Grosse &
        Salakhutdinov (2016), Importance Weighted Autoencoders.
    """
    signals = vimco_signals(log_weights)  # checks log_weights: (K, ...), K >= 2, finite
    check_same_shape("log_q", log_q, "log_weights", log_weights, "one log q(h_k) per sample")
    check_finite("log_q", log_q)
    k = log_weights.shape[0]
    bound = torch.logsumexp(log_weights, 0) - math.log(k)
    surrogate = bound + (signals * (magic_box(log_q) - 1.0)).sum(0)
    return bound.detach(), surrogate


def check_sample_dim(name: str, x: object, minimum: int, what: str = "samples") -> Tensor:
    """``x`` is a tensor with at least ``minimum`` entries along its first (sample) dimension."""
    x = check_tensor(name, x)
    if x.dim() == 0 or x.shape[0] < minimum:
        raise ValueError(
            f"{name}: expected shape (K, ...) with K >= {minimum} {what} along dim 0, got "
            f"{tuple(x.shape)}"
        )
    return x
