r"""Gradient estimators of :math:`\nabla_\theta \mathbb{E}_{p(x;\theta)}[f(x)]` and ``expectation``.

Every estimator is a small object with ``terms(f, dist, samples, baseline, context)`` returning
per-sample surrogate terms of shape ``(K,) + batch_shape``: their mean over the first dimension has
the Monte Carlo estimate as its value and the estimator as its gradient, and each term's gradient
is that sample's contribution (what :mod:`logtrick.diagnostics` measures). Each estimator class
states what it assumes as metadata (``unbiased``, ``requires``, ``max_order``);
:func:`estimator_table` renders them as one table.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.distributions as D
from torch import Tensor
from torch.distributions import Distribution

from logtrick.baselines import Baseline, resolve_baseline, score_terms
from logtrick.checks import check_distribution, check_positive_int
from logtrick.costs import CostFn, evaluate_cost, joint_log_prob, tensors_of

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "ScoreFunction",
    "estimator_table",
    "expectation",
    "resolve_estimator",
    "resolve_pair",
]


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


ESTIMATORS: dict[str, type] = {"score_function": ScoreFunction}
"""Short name -> estimator class; the package registers the estimators of the other modules
(``pathwise``, ``auto``, ``arm``, ...) here when it is imported."""


def resolve_estimator(spec: object) -> Estimator:
    """A short name or an estimator object -> an estimator object."""
    if isinstance(spec, str):
        if spec not in ESTIMATORS:
            raise ValueError(
                f"estimator: unknown name {spec!r}; expected one of {sorted(ESTIMATORS)}"
            )
        return ESTIMATORS[spec]()
    if isinstance(spec, type):
        raise TypeError(f"estimator: pass an instance, e.g. {spec.__name__}(), not the class")
    if not callable(getattr(spec, "terms", None)):
        raise TypeError(f"estimator: expected a name or an object with .terms(), got {spec!r}")
    return spec  # type: ignore[return-value]


def resolve_pair(estimator: object, baseline: object, samples: int) -> tuple[Estimator, Baseline]:
    """The estimator and baseline objects for a call with ``samples`` draws, checked together:
    bad names fail here, a baseline needing more samples (leave-one-out) or one the estimator
    would ignore (no score term) is refused. Every entry point that runs an estimator
    (:func:`expectation`, the diagnostics) resolves through this function."""
    est = resolve_estimator(estimator)
    bl: Baseline = resolve_baseline(baseline)  # bad names fail here, even where b goes unused
    if samples < bl.min_samples:
        raise ValueError(
            f"{type(bl).__name__}: needs at least {bl.min_samples} samples, got "
            f"samples={samples}; use samples >= {bl.min_samples} or another baseline"
        )
    check_baseline_used(est, bl)
    return est, bl


def estimator_table() -> str:
    """The estimators by short name with what they assume, as a Markdown table (one row each,
    from the ``unbiased``, ``requires``, ``max_order`` and ``takes_baseline`` metadata of the
    classes)."""
    rows = [
        "| name | class | unbiased | requires | derivative orders | baseline |",
        "|---|---|---|---|---|---|",
    ]
    for name, cls in sorted(ESTIMATORS.items()):
        order = getattr(cls, "max_order", 1)
        orders = "any" if order == math.inf else ("first only" if order == 1 else f"up to {order}")
        takes = "used" if getattr(cls, "takes_baseline", True) else "refused (no score term)"
        rows.append(
            f"| `{name}` | `{cls.__name__}` | {getattr(cls, 'unbiased', '?')} | "
            f"{getattr(cls, 'requires', '?')} | {orders} | {takes} |"
        )
    return "\n".join(rows)


def _integer_parameters(dist: Distribution) -> list[str]:
    return [
        f"{name} ({t.dtype})"
        for name, t in tensors_of(dist)
        if not (t.is_floating_point() or t.is_complex())
    ]


def _warn_no_gradient(dist: Distribution) -> None:
    """The estimate carries no gradient: say why (no parameter requires grad, or an integer one)."""
    if any(t.requires_grad for _, t in tensors_of(dist)):
        return
    ints = _integer_parameters(dist)
    why = f"; integer parameters cannot: {', '.join(ints)}" if ints else ""
    warnings.warn(
        f"dist: no parameter of this {type(dist).__name__} requires grad, so the estimate "
        f"carries no gradient for it (fine if you only want the value){why}",
        stacklevel=3,
    )


def expectation(
    f: CostFn,
    dist: Distribution,
    samples: int = 1,
    estimator: object = "auto",
    baseline: object = None,
    context: Tensor | None = None,
) -> Tensor:
    r"""Monte Carlo estimate of :math:`\mathbb{E}_{x\sim p}[f(x)]` whose gradient is an estimator.

    .. math::  \text{value} = \frac1K \sum_{k} f(x_k),\qquad
               \text{gradient} \approx \nabla_\theta \mathbb{E}_p[f(x)]

    Args:
        f: maps samples ``(K,) + batch_shape + event_shape`` to costs ``(K,) + batch_shape``; may
            be a black box, or a network whose own parameters get their ordinary gradient.
        dist: any ``torch.distributions.Distribution`` with floating-point parameters
            (``log_prob`` for the score function, ``rsample`` for the pathwise estimator).
        samples: K > 0 draws.
        estimator: ``"auto"``, ``"score_function"``, ``"pathwise"``, another name in
            :data:`ESTIMATORS` or an estimator object. ``"auto"`` picks pathwise when
            ``rsample`` is a true reparameterisation
            (:data:`logtrick.pathwise.REPARAMETERISATION_RULE`) and f is differentiable in x,
            which is unbiased only if f is also continuous along the path.
        baseline: see :func:`logtrick.surrogates`; refused by the estimators without a score
            term (``takes_baseline`` false: pathwise, ARM, DisARM, the relaxations,
            measure-valued, delta method), which would ignore it.
        context: input of a ``Learned`` baseline.

    Returns:
        A tensor of shape ``dist.batch_shape`` (or its prefix, if f reduced trailing batch
        dimensions).

    Example:
        >>> import torch, logtrick as lt
        >>> from torch.distributions import Bernoulli
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> f = lambda b: ((b - 0.499) ** 2).sum(-1)
        >>> est = lt.expectation(f, Bernoulli(logits=theta), samples=16, baseline="leave_one_out")
        >>> est.backward()      # theta.grad: unbiased estimate of the gradient of E[f(b)]
        >>> theta.grad.shape
        torch.Size([3])
    """
    check_positive_int("samples", samples, "the number of draws K")
    check_distribution("dist", dist)
    est, bl = resolve_pair(estimator, baseline, samples)
    estimate = getattr(est, "estimate", None)
    try:
        out = (
            estimate(f, dist, samples, bl, context)
            if estimate is not None
            else est.terms(f, dist, samples, bl, context).mean(0)
        )
    except (NotImplementedError, RuntimeError) as err:  # e.g. sampling with integer parameters
        ints = _integer_parameters(dist)
        if ints:
            raise TypeError(
                f"dist: {type(dist).__name__} has integer parameters {', '.join(ints)}; "
                f"distribution parameters must be floating point (e.g. torch.tensor(0.0) or "
                f".float()) to be sampled and to carry gradients"
            ) from err
        raise
    if not out.requires_grad and torch.is_grad_enabled():
        _warn_no_gradient(dist)
    return out


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


def check_baseline_used(estimator: object, baseline: object) -> None:
    """An active baseline given to an estimator without a score term (``takes_baseline`` false:
    pathwise, ARM, DisARM, the relaxations, measure-valued, delta method) would be ignored:
    refuse it rather than let the user believe it reduces the variance."""
    if getattr(estimator, "takes_baseline", True) or not getattr(baseline, "active", False):
        return
    name = getattr(estimator, "name", type(estimator).__name__)
    raise ValueError(
        f"baseline: the {name} estimator has no score term, so the baseline {baseline!r} "
        f"would be ignored; pass baseline=None, or estimator='score_function' (or 'rebar', "
        f"'relax' for discrete samples) to use it"
    )
