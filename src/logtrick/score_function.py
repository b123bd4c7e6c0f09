r"""The score-function (REINFORCE) estimator and the protocol every estimator follows.

.. math::  \nabla_\theta \mathbb{E}_p[f] = \mathbb{E}_p[f(x)\, \nabla_\theta \log p(x;\theta)]

It sits below the other estimator families (the pathwise estimator falls back to it), and
:mod:`logtrick.estimators` registers all of them by short name above them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch.distributions as D
from torch import Tensor
from torch.distributions import Distribution

from logtrick.baselines import resolve_baseline, score_terms
from logtrick.costs import CostFn, evaluate_cost, joint_log_prob

__all__ = ["Estimator", "ScoreFunction", "check_fixed_support"]


class Estimator(Protocol):
    """The estimator protocol: per-sample surrogate terms, ``(K,) + batch_shape``, and metadata.

    An estimator may also define ``estimate(...)`` (same arguments), the mean of its terms over
    the samples computed in one step; :func:`expectation` uses it when present.
    """

    name: ClassVar[str]
    """Its short name in :data:`ESTIMATORS`."""
    unbiased: ClassVar[str]
    """``"yes"`` (for every f that meets ``requires``), the condition on f, or ``"no"``."""
    requires: ClassVar[str]
    """What it needs: distribution families, ``rsample``, derivatives of f."""
    max_order: ClassVar[float]
    """The highest derivative order it estimates (``math.inf``: any, by repeated
    differentiation; 1: a second derivative through it raises or is not unbiased)."""
    takes_baseline: ClassVar[bool]
    """Whether it has a score term that a baseline combines with; one without (pathwise, ARM,
    the relaxations, ...) refuses an active baseline (:func:`check_baseline_used`).
    An estimator object without this attribute is taken to use its baseline."""

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor: ...


def _score_function(
    f: CostFn,
    dist: Distribution,
    x: Tensor,
    baseline: object,
    context: Tensor | None,
    reduce: bool,
    cost: Tensor | None = None,
) -> Tensor:
    """The score-function terms (their mean if ``reduce``) at samples ``x`` drawn without
    gradient; ``cost`` if f was already evaluated there."""
    check_fixed_support("dist", dist)
    if cost is None:
        cost = evaluate_cost(f, x, dist, x.shape[0])
    log_prob = joint_log_prob(dist, x, cost)
    bl = resolve_baseline(baseline)
    return score_terms(cost, log_prob, bl, 0, context, reduce=reduce)  # type: ignore[return-value]


@dataclass(frozen=True)
class ScoreFunction:
    r"""Score-function (REINFORCE, likelihood-ratio) estimator.

    .. math::  \nabla_\theta \mathbb{E}_p[f] \approx \frac1K \sum_{k=1}^K
               (f(x_k) - b_k)\, \nabla_\theta \log p(x_k;\theta), \quad x_k \sim p

    Requires: ``log_prob`` and a support that does not depend on θ (``Uniform(low, high)`` with
    bounds that require grad is refused: the estimator would miss the boundary term). f may be a
    black box, non-differentiable, discrete. Unbiased for any baseline independent of the sample
    it multiplies; the variance grows with the magnitude of
    ``f - b`` and the dimension. Derivatives of every order (DiCE's magic box).

    References: Williams (1992); Glynn (1990); Mohamed et al. (2020), section 4.
    """

    name: ClassVar[str] = "score_function"
    unbiased: ClassVar[str] = "yes"
    requires: ClassVar[str] = "log_prob; a support independent of θ; f may be a black box"
    max_order: ClassVar[float] = math.inf
    takes_baseline: ClassVar[bool] = True

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        x = dist.sample((samples,))  # torch's sample() runs without gradient
        return _score_function(f, dist, x.detach(), baseline, context, False)

    def estimate(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        """``terms(...).mean(0)``, with the mean fused into the score term."""
        x = dist.sample((samples,))
        return _score_function(
            f, dist, x.detach() if x.requires_grad else x, baseline, context, True
        )

    def terms_at(
        self, f: CostFn, dist: Distribution, x: Tensor, baseline: object, context: Tensor | None
    ) -> Tensor:
        """The terms for given samples ``x`` (drawn without gradient)."""
        return _score_function(f, dist, x, baseline, context, False)


def _moves(constraint: object, name: str) -> bool:
    """A bound that requires grad and is finite somewhere (an infinite one cannot move:
    ``GeneralizedPareto``'s upper bound for a concentration >= 0)."""
    bound = getattr(constraint, name, None)
    return isinstance(bound, Tensor) and bound.requires_grad and not bool(bound.isinf().all())


def check_fixed_support(name: str, dist: Distribution) -> Distribution:
    """The support of ``dist`` does not move with its parameters, as far as torch's support
    constraint shows (``Uniform(low, high)``, ``Pareto``'s ``scale``: bounds that require grad).

    The score-function identity differentiates under the integral over a fixed support; where a
    bound depends on θ it misses the boundary term and is biased (for ``Uniform(θ, θ + 2)`` and
    f = x² its gradient is 0 on every sample, the truth is 2θ + 2). Cheap: two attribute reads
    for the usual distributions, whose support is a constant constraint.
    """
    inner = dist
    while isinstance(inner, D.Independent):
        inner = inner.base_dist
    declared = getattr(type(inner), "support", None)
    if isinstance(declared, D.constraints.Constraint) and not isinstance(declared, property):
        return dist  # a constant class attribute (Normal's real line): nothing can move
    constraint: object = dist.support
    while hasattr(constraint, "base_constraint"):  # independent(...)
        constraint = constraint.base_constraint
    moving = [name for name in ("lower_bound", "upper_bound") if _moves(constraint, name)]
    if moving:
        verb = "requires" if len(moving) == 1 else "require"
        raise ValueError(
            f"{name}: the support of {type(dist).__name__} depends on its parameters (its "
            f"{' and '.join(moving)} {verb} grad), so the score-function estimator would miss "
            f"the boundary term and be biased; use estimator='pathwise' if it has rsample and f is "
            f"differentiable, or make the bounds constants"
        )
    return dist
