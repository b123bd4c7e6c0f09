r"""Measure gradient estimators: per-sample gradients, variance over repeated draws, comparisons.

The per-sample surrogate terms ``est.terms(f, dist, K, baseline, context)``, ``(K,) + batch``,
have the estimate as the gradient of their mean, so each term's gradient is that sample's
contribution :math:`g_k`, :math:`\hat g = \frac1K \sum_k g_k`. R estimates from fresh draws give
the variance per parameter,

.. math::  \operatorname{Var}[\hat g_i] \approx \frac{1}{R-1}\sum_{r=1}^R
           (\hat g_i^{(r)} - \bar g_i)^2,\qquad
           \operatorname{SE}[\widehat{\operatorname{Var}}] \approx
           \sqrt{(m_4 - \tfrac{R-3}{R-1} s^4) / R},

with :math:`m_4` the fourth central moment. ``K * variance`` is the per-sample variance (also
when a shared baseline makes the terms dependent); ``variance * f_evals`` the variance per work.

References:
    Mohamed, Rosca, Figurnov, Mnih (2020). Monte Carlo Gradient Estimation in Machine Learning.
    JMLR 21(132), section 3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from logtrick.checks import check_in_range, check_param_list, check_positive_int
from logtrick.costs import CostFn
from logtrick.estimators import resolve_pair
from logtrick.gradient_stats import GradientStats, flat, per_sample_gradients, summarise
from logtrick.problems import Problem
from logtrick.scores import DistFn, call_dist_fn

__all__ = [
    "ComparisonRow",
    "GradientStats",
    "PathwiseCheck",
    "check_pathwise",
    "compare",
    "format_table",
    "gradient_variance",
    "per_sample_gradients",
    "relative_costs",
    "table_cells",
]


class _CountingCost:
    """Wraps f and counts the samples it is evaluated on (the leading dimension of x)."""

    def __init__(self, f: CostFn) -> None:
        self.f, self.count = f, 0

    def __call__(self, x: Tensor) -> Tensor:
        self.count += x.shape[0] if x.dim() else 1
        return self.f(x)


def _estimate(
    f: CostFn,
    dist: Distribution,
    params: list[Tensor],
    samples: int,
    est: object,
    baseline: object,
    context: Tensor | None,
) -> tuple[Tensor, ...]:
    terms = est.terms(f, dist, samples, baseline, context)  # type: ignore[attr-defined]
    return torch.autograd.grad(
        terms.mean(0).sum(), params, allow_unused=True, materialize_grads=True
    )


def gradient_variance(
    f: CostFn,
    dist_fn: DistFn,
    params: Sequence[Tensor],
    samples: int = 1,
    estimator: object = "score_function",
    baseline: object = None,
    repeats: int = 1000,
    *,
    context: Tensor | None = None,
    warmup: int = 0,
    vectorize: bool = False,
    seed: int | None = None,
) -> GradientStats:
    r"""Mean, variance and cost of a gradient estimator over R independent repeated estimates.

    .. math::  \hat g^{(r)} = \nabla_\theta \frac1K \sum_k L_k^{(r)},\quad r = 1..R,\qquad
               \operatorname{Var}[\hat g] \approx \tfrac{1}{R-1}\sum_r (\hat g^{(r)} - \bar g)^2

    The baseline is resolved once, so a stateful one (``"moving_average"`` or a
    ``MovingAverage`` you pass) keeps its state across the repeats; ``warmup`` estimates are
    drawn first and discarded (its history then reflects the current parameters).

    Args:
        f: cost, samples ``(K,) + batch_shape + event_shape`` -> ``(K,) + batch_shape``.
        dist_fn: maps the list ``params`` to the distribution.
        params: tensors that require grad; statistics are over their elements, flattened and
            concatenated in order (P in all).
        samples: K > 0 draws per estimate.
        estimator: a name or an estimator object.
        baseline: a baseline spec.
        repeats: R >= 4 estimates.
        context: input of a ``Learned`` baseline.
        warmup: estimates drawn and discarded before measuring.
        vectorize: draw all R estimates in one pass by giving every parameter a leading
            dimension R (``dist_fn`` must then return batch shape ``(R,) + batch_shape`` and f
            must act independently along it); much faster, but each replica has its own
            baseline state, and ``OptimalScale`` is not supported.
        seed: if given, the draws use this seed and the global RNG state is restored after.

    Returns:
        A :class:`GradientStats` (time per estimate includes the backward pass).

    References:
        Mohamed et al. (2020), JMLR 21(132), sections 3 and 7 (comparing estimators).
    """
    params = check_param_list("params", params, requires_grad=True)
    check_positive_int("samples", samples, "the number of draws K")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 4:
        raise ValueError(
            f"repeats: expected an int >= 4 (the number of estimates), got {repeats!r}"
        )
    est, baseline = resolve_pair(estimator, baseline, samples)
    if vectorize and getattr(baseline, "params", None) is not None:
        raise TypeError(
            f"baseline: {type(baseline).__name__} is tied to the tensors it was built with (its "
            f"params), not to the replicas of vectorize=True; use vectorize=False"
        )
    counted = _CountingCost(f)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for _ in range(warmup):
            _estimate(f, call_dist_fn(dist_fn, params), params, samples, est, baseline, context)
        start = time.perf_counter()
        grads = _estimates(
            counted, dist_fn, params, samples, est, baseline, repeats, context, vectorize
        )
        seconds = (time.perf_counter() - start) / repeats
    calls = 1 if vectorize else repeats
    return summarise(grads, samples, counted.count / calls, seconds)


def _estimates(
    f: CostFn,
    dist_fn: DistFn,
    params: list[Tensor],
    samples: int,
    est: object,
    baseline: object,
    repeats: int,
    context: Tensor | None,
    vectorize: bool,
) -> Tensor:
    """``(R, P)`` estimates: R calls in a loop, or one pass with a leading replica dimension."""
    if not vectorize:
        rows = []
        for _ in range(repeats):
            dist = call_dist_fn(dist_fn, params)
            rows.append(flat(_estimate(f, dist, params, samples, est, baseline, context), 1))
        return torch.cat(rows)
    replicas = [p.detach().expand(repeats, *p.shape).clone().requires_grad_(True) for p in params]
    dist = call_dist_fn(dist_fn, replicas)
    if tuple(dist.batch_shape[:1]) != (repeats,):
        raise ValueError(
            f"dist_fn: with vectorize=True it must map parameters with a leading dimension "
            f"R={repeats} to batch shape (R,) + batch_shape, got batch shape "
            f"{tuple(dist.batch_shape)}"
        )
    return flat(_estimate(f, dist, replicas, samples, est, baseline, context), repeats)


@dataclass(frozen=True)
class PathwiseCheck:
    """The pathwise and score-function gradients of one f compared (see :func:`check_pathwise`)."""

    pathwise: Tensor
    """``(P,)`` mean pathwise gradient."""
    score_function: Tensor
    """``(P,)`` mean score-function gradient (unbiased for every f)."""
    stderr: Tensor
    """``(P,)`` standard error of their difference."""
    z: Tensor
    """``(P,)`` ``|pathwise - score_function| / stderr``."""
    threshold: float
    """The critical z: Bonferroni over the P entries at the stated failure rate."""

    @property
    def biased(self) -> bool:
        """Whether some entry's z exceeds the threshold: the pathwise gradient is biased for f."""
        return bool((self.z > self.threshold).any())


def check_pathwise(
    f: CostFn,
    dist_fn: DistFn,
    params: Sequence[Tensor],
    samples: int = 2048,
    alpha: float = 1e-3,
    *,
    seed: int | None = None,
) -> PathwiseCheck:
    r"""Test whether the pathwise estimator is unbiased for ``f``: compare it with the score
    function on independent draws.

    .. math::  z_i = \frac{|\bar g^{\mathrm{pw}}_i - \bar g^{\mathrm{sf}}_i|}
               {\sqrt{(s^2_{\mathrm{pw},i} + s^2_{\mathrm{sf},i}) / N}}

    The pathwise estimator is unbiased only if f is continuous in x and differentiable almost
    everywhere along the path; a step (``x + (x > 0)``) is invisible to autograd and biases it,
    while the score function is unbiased for every f. Each estimator gets ``samples``
    independent per-sample gradients (:func:`per_sample_gradients`; the score function with a
    constant baseline from a separate pilot draw), so the check costs about ``3 * samples``
    evaluations of f and per-sample backward passes that grow as ``samples**2`` (keep the
    batch small). It flags a bias larger than a few standard errors; it cannot prove there is
    none.

    Args:
        f: cost, samples ``(N,) + batch_shape + event_shape`` -> ``(N,) + batch_shape[:j]``,
            differentiable in x (the pathwise estimator differentiates it).
        dist_fn: maps the list ``params`` to a distribution with ``rsample``.
        params: tensors that require grad (P elements in all).
        samples: N >= 2 draws per estimator.
        alpha: the failure rate of the check for an f that is fine (Bonferroni over P).
        seed: if given, the draws use this seed and the global RNG state is restored after.

    Returns:
        A :class:`PathwiseCheck`; ``result.biased`` says whether to use the score function.

    References:
        Mohamed et al. (2020), JMLR 21(132), section 5.3 (the pathwise estimator's requirements).
    """
    params = check_param_list("params", params, requires_grad=True, nonempty=True)
    check_positive_int("samples", samples, "the number of draws per estimator")
    if samples < 2:
        raise ValueError(f"samples: expected at least 2 draws (a standard error), got {samples}")
    check_in_range("alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        dist = call_dist_fn(dist_fn, params)
        pathwise = per_sample_gradients(f, dist, params, samples, "pathwise").double()
        with torch.no_grad():
            pilot = torch.as_tensor(f(dist_fn(params).sample((samples,)))).mean(0)
        score = per_sample_gradients(
            f, dist_fn(params), params, samples, "score_function", pilot
        ).double()
    diff = pathwise.mean(0) - score.mean(0)
    stderr = ((pathwise.var(0) + score.var(0)) / samples).sqrt()
    z = torch.where(diff == 0, torch.zeros_like(diff), diff.abs() / stderr)
    p = torch.tensor(1.0 - alpha / (2 * diff.numel()), dtype=torch.float64)
    threshold = float(torch.special.ndtri(p))
    return PathwiseCheck(pathwise.mean(0), score.mean(0), stderr, z, threshold)


@dataclass(frozen=True)
class ComparisonRow:
    """One estimator's line in a comparison table."""

    name: str
    """Label, e.g. ``"score_function + leave_one_out"``."""
    stats: GradientStats
    """Its measured statistics."""
    exact: Tensor | None = None
    """``(P,)`` exact gradient, if known."""

    @property
    def bias_z(self) -> float | None:
        """``max_i |mean_i - exact_i| / stderr_i``: about N(0,1)-sized for an unbiased estimator."""
        if self.exact is None:
            return None
        diff = (self.stats.mean - self.exact.to(self.stats.mean)).abs()
        return float(torch.where(diff == 0, 0.0, diff / self.stats.stderr).max())


def compare(
    problem: Problem | CostFn,
    estimators: dict[str, tuple[object, object]],
    samples: int = 8,
    repeats: int = 500,
    *,
    dist_fn: DistFn | None = None,
    params: Sequence[Tensor] | None = None,
    seed: int = 0,
    warmup: int = 20,
    vectorize: bool = False,
) -> list[ComparisonRow]:
    """Measure several (estimator, baseline) pairs on one problem with the same settings.

    Args:
        problem: a :class:`logtrick.problems.Problem` (cost, distribution, parameters, exact
            expectation), or a cost f together with ``dist_fn`` and ``params``.
        estimators: label -> ``(estimator, baseline)``, e.g.
            ``{"rloo": ("score_function", "leave_one_out"), "pathwise": ("pathwise", None)}``.
        samples: K draws per estimate.
        repeats: R estimates per estimator.
        seed: every estimator draws from this seed.
        warmup: estimates discarded first (lets moving averages settle).
        vectorize: see :func:`gradient_variance`.
        dist_fn: with a cost f: maps ``params`` to the distribution.
        params: with a cost f: the tensors whose gradient is estimated.

    Returns:
        One :class:`ComparisonRow` per entry, in order; print with :func:`format_table`.
    """
    if not isinstance(problem, Problem):
        if not callable(problem) or dist_fn is None or params is None:
            raise TypeError(
                f"problem: expected a logtrick.problems.Problem, or a cost f with dist_fn= and "
                f"params=, got {problem!r}"
            )
        params = tuple(check_param_list("params", params, requires_grad=True))
        names = tuple(f"params[{i}]" for i in range(len(params)))
        problem = Problem(getattr(problem, "__name__", "f"), problem, dist_fn, params, names)
    exact, rows = problem.exact_gradient(), []
    for name, (estimator, baseline) in estimators.items():
        stats = gradient_variance(
            problem.f,
            problem.dist_fn,
            problem.params,
            samples,
            estimator,
            baseline,
            repeats,
            warmup=warmup,
            vectorize=vectorize,
            seed=seed,
        )
        rows.append(ComparisonRow(name, stats, None if exact is None else exact.double()))
    return rows


HEADERS = ("estimator", "variance", "SE", "var×evals", "f-evals", "µs", "rel. cost", "max|z|")


def relative_costs(rows: Sequence[ComparisonRow]) -> list[float]:
    """Each row's time per estimate over the plain score function's (the first row's if there
    is none), measured in the same run."""
    if not rows:
        return []
    ref = next((r for r in rows if r.name == "score_function"), rows[0]).stats.seconds
    return [r.stats.seconds / ref if ref > 0 else math.nan for r in rows]


def table_cells(rows: Sequence[ComparisonRow]) -> tuple[tuple[str, ...], list[list[str]]]:
    """Headers and formatted cells of a comparison table (shared by the text and rich views).

    Columns: label; total variance of the estimate (trace over parameters) and its standard
    error; variance times f-evaluations; f-evaluations and microseconds per estimate; the time
    relative to the plain score function's row (the first row if there is none); the
    largest ``|mean - exact| / SE`` over parameters ("-" if the exact gradient is unknown).
    """
    cells = []
    for row, rel in zip(rows, relative_costs(rows)):
        s, z = row.stats, row.bias_z
        cells.append(
            [
                row.name,
                f"{s.total_variance:.3g}",
                f"{s.total_variance_se:.2g}",
                f"{s.total_variance * s.f_evals:.3g}",
                f"{s.f_evals:g}",
                f"{s.seconds * 1e6:.0f}",
                f"{rel:.2f}",
                "-" if z is None else f"{z:.2f}",
            ]
        )
    return HEADERS, cells


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """The comparison table as aligned plain text (one line per estimator)."""
    headers, cells = table_cells(rows)
    widths = [max(len(r[i]) for r in [list(headers), *cells]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        rest = (v.rjust(w) for v, w in zip(values[1:], widths[1:]))
        return "  ".join([values[0].ljust(widths[0]), *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])
