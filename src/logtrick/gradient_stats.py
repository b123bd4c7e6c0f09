r"""Measurements of gradient estimators: per-sample contributions, and the statistics of repeated
estimates (mean, variance and the variance's standard error).

.. math::  \operatorname{Var}[\hat g_i] \approx \frac{1}{R-1}\sum_{r=1}^R
           (\hat g_i^{(r)} - \bar g_i)^2,\qquad
           \operatorname{SE}[\widehat{\operatorname{Var}}] \approx
           \sqrt{(m_4 - \tfrac{R-3}{R-1} s^4) / R},

with :math:`m_4` the fourth central moment (used by :mod:`logtrick.diagnostics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from logtrick.checks import check_distribution, check_param_list, check_positive_int
from logtrick.costs import CostFn
from logtrick.estimators import resolve_pair

__all__ = ["GradientStats", "flat", "per_sample_gradients", "summarise"]


@dataclass(frozen=True)
class GradientStats:
    """Statistics of R independent gradient estimates over P parameter elements."""

    mean: Tensor
    """``(P,)`` mean of the estimates."""
    variance: Tensor
    """``(P,)`` variance of one K-sample estimate (unbiased sample variance over the repeats)."""
    variance_se: Tensor
    """``(P,)`` standard error of ``variance`` (from the fourth central moment)."""
    total_variance: float
    """Trace of the estimate's covariance: ``variance.sum()``."""
    total_variance_se: float
    """Standard error of ``total_variance``."""
    samples: int
    """K, the draws per estimate."""
    repeats: int
    """R, the number of estimates."""
    f_evals: float
    """Evaluations of f per estimate (per batch element)."""
    seconds: float
    """Wall time per estimate, forward and backward."""

    @property
    def stderr(self) -> Tensor:
        """``(P,)`` standard error of ``mean``."""
        return (self.variance / self.repeats).sqrt()

    @property
    def per_sample_variance(self) -> Tensor:
        """``(P,)`` ``K * variance``: the variance of one sample's contribution."""
        return self.samples * self.variance

    @property
    def per_sample_variance_se(self) -> Tensor:
        """``(P,)`` standard error of ``per_sample_variance``."""
        return self.samples * self.variance_se

    @property
    def variance_times_evals(self) -> Tensor:
        """``(P,)`` ``variance * f_evals``: variance per unit of work (lower is better)."""
        return self.variance * self.f_evals

    @property
    def snr(self) -> Tensor:
        """``(P,)`` signal-to-noise ratio ``|mean| / sqrt(variance)``."""
        return self.mean.abs() / self.variance.sqrt()


def summarise(grads: Tensor, samples: int, f_evals: float, seconds: float) -> GradientStats:
    """The statistics of ``grads`` ``(R, P)``: R estimates of P gradient entries."""
    g = grads.double()
    r = g.shape[0]
    mean = g.mean(0)
    dev = g - mean
    var = dev.pow(2).sum(0) / (r - 1)
    m4 = dev.pow(4).mean(0)
    var_se = ((m4 - (r - 3) / (r - 1) * var.pow(2)).clamp_min(0.0) / r).sqrt()
    sq = dev.pow(2).sum(1)  # per-repeat squared deviation: its mean estimates the trace
    total_se = float(sq.std() / math.sqrt(r)) * r / (r - 1)
    return GradientStats(
        mean, var, var_se, float(var.sum()), total_se, samples, r, f_evals, seconds
    )


def flat(grads: Sequence[Tensor], rows: int) -> Tensor:
    """Gradients of several tensors, each ``(rows, ...)``, as one ``(rows, P)`` matrix."""
    return torch.cat([g.reshape(rows, -1) for g in grads], dim=1)


def _jacobian_rows(values: Tensor, params: list[Tensor], chunk: int) -> Tensor:
    """``d values[k] / d params`` for every k, as ``(K, P)``: batched backward over one-hot rows."""
    k = values.shape[0]
    eye = torch.eye(k, dtype=values.dtype, device=values.device)
    out = []
    for start in range(0, k, chunk):
        rows = eye[start : start + chunk]
        grads = torch.autograd.grad(
            values,
            params,
            grad_outputs=rows,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        out.append(flat(grads, rows.shape[0]))
    return torch.cat(out)


def per_sample_gradients(
    f: CostFn,
    dist: Distribution,
    params: Sequence[Tensor],
    samples: int,
    estimator: object = "score_function",
    baseline: object = None,
    context: Tensor | None = None,
    chunk: int = 1024,
) -> Tensor:
    r"""Per-sample gradient contributions :math:`g_k` of one estimate, flattened over ``params``.

    .. math::  g_k = \nabla_\theta \textstyle\sum_{\text{batch}} L_k,\qquad
               \hat g = \frac1K \sum_{k=1}^K g_k

    Takes the gradient of each per-sample surrogate term (summed over batch dimensions) with a
    vectorised backward (``is_grads_batched``, one-hot rows in chunks): no Python loop over
    samples, but time and memory grow as :math:`K \cdot \min(K, \text{chunk})`, so keep K to a few
    thousand.

    Args:
        f: cost, samples ``(K,) + batch_shape + event_shape`` -> ``(K,) + batch_shape``.
        dist: the distribution, built from ``params`` (so gradients flow to them).
        params: tensors that require grad; the result's columns are their elements, flattened
            and concatenated in order.
        samples: K > 0 draws.
        estimator: a name or an estimator object (see :func:`logtrick.expectation`).
        baseline: a baseline spec (see :func:`logtrick.surrogates`).
        context: input of a ``Learned`` baseline.
        chunk: rows per batched backward.

    Returns:
        ``(K, P)`` with ``P = sum(p.numel() for p in params)``; its mean over rows is the
        estimator's gradient.

    References:
        Mohamed et al. (2020), JMLR 21(132), section 3 (variance of per-sample estimators).
    """
    params = check_param_list("params", params, requires_grad=True)
    check_distribution("dist", dist)
    check_positive_int("samples", samples, "the number of draws K")
    est, bl = resolve_pair(estimator, baseline, samples)
    terms = est.terms(f, dist, samples, bl, context)
    if terms.dim() == 0 or terms.shape[0] != samples:
        raise ValueError(
            f"estimator: expected terms of shape (samples={samples},) + batch, got "
            f"{tuple(terms.shape)}"
        )
    per_term = terms.reshape(samples, -1).sum(1)
    return _jacobian_rows(per_term, params, chunk)
