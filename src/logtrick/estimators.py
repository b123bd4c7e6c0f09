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
from torch.autograd.graph import Node
from torch.distributions import Distribution

from logtrick.baselines import Baseline, resolve_baseline, score_terms
from logtrick.checks import check_distribution, check_positive_int, transformed
from logtrick.costs import CostFn, evaluate_cost, joint_log_prob, require_gradient, tensors_of

__all__ = [
    "ESTIMATORS",
    "Auto",
    "Estimator",
    "Pathwise",
    "ScoreFunction",
    "estimator_table",
    "expectation",
    "reparameterised",
    "resolve_estimator",
    "resolve_pair",
]

PATHWISE_CONDITION = "if f is continuous in x and differentiable almost everywhere along the path"
"""When the pathwise estimator is unbiased: a step in f (``x + (x > 0)``) biases it."""

NOT_REPARAMETERISED: tuple[type, ...] = (
    D.OneHotCategoricalStraightThrough,
    D.RelaxedBernoulli,
    D.relaxed_bernoulli.LogitRelaxedBernoulli,
    D.RelaxedOneHotCategorical,
    D.relaxed_categorical.ExpRelaxedCategorical,
)
"""Samplers whose ``rsample`` is not the reparameterisation of the discrete variable they stand
for: straight-through (the value of a discrete sample, the gradient of its mean) and relaxed
(a continuous stand-in for a discrete sample)."""

REPARAMETERISATION_RULE = (
    "pathwise only where rsample is a true reparameterisation: has_rsample, a support that is "
    "not discrete, and no straight-through or relaxed sampler (NOT_REPARAMETERISED) inside "
    "Independent or a transform"
)
"""The rule by which ``auto`` chooses, stated once (and in :func:`estimator_table`): the flag
``has_rsample`` alone is not enough (``OneHotCategoricalStraightThrough`` sets it)."""


def _discrete_support(dist: Distribution) -> bool:
    try:
        return bool(getattr(dist.support, "is_discrete", False))
    except NotImplementedError:
        return False


def reparameterised(dist: Distribution) -> bool:
    """Whether ``dist.rsample`` is a true reparameterisation (:data:`REPARAMETERISATION_RULE`)."""
    if not dist.has_rsample:
        return False
    while True:
        if isinstance(dist, NOT_REPARAMETERISED) or _discrete_support(dist):
            return False
        inner = getattr(dist, "base_dist", None)  # Independent, TransformedDistribution
        if not isinstance(inner, Distribution):
            return True
        dist = inner


def _guard_pathwise_gradient(x: Tensor, who: str) -> None:
    """A NaN or inf gradient through the samples (f's derivative undefined on them, e.g. sqrt at
    a negative x inside ``torch.where``) raises in the backward pass, naming the way out."""
    if not x.requires_grad:
        return

    def check(grad: Tensor) -> None:
        if transformed(grad) or bool(grad.isfinite().all()):
            return
        raise ValueError(
            f"f: the gradient of f(x) in x is NaN or inf on {int((~grad.isfinite()).sum())} of "
            f"{grad.numel()} entries, through {who}; f's derivative is undefined on some "
            f"samples (e.g. sqrt or log where torch.where discards the value): use "
            f"estimator='score_function', which never differentiates f"
        )

    x.register_hook(check)


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


@dataclass(frozen=True)
class Pathwise:
    r"""Pathwise (reparameterisation) estimator.

    .. math::  \nabla_\theta \mathbb{E}_p[f] \approx \frac1K \sum_k
               \nabla_x f(x)\big|_{x = g(\epsilon_k;\theta)}\, \nabla_\theta g(\epsilon_k;\theta)

    Requires: ``dist.has_rsample`` with a support that is not discrete (a straight-through
    sampler such as ``OneHotCategoricalStraightThrough`` is refused) and f differentiable in x;
    a NaN or inf gradient through the samples raises in the backward pass. Unbiased *if f is
    continuous in x and differentiable almost everywhere along the path* (then the derivative and
    the expectation commute); a jump in f (``x + (x > 0)``, ``round``) is invisible to autograd
    and biases it: check your f with :func:`logtrick.diagnostics.check_pathwise`. Usually far
    lower variance than the score function. It has no score term, so it refuses a baseline.

    References: Kingma & Welling (2014); Rezende et al. (2014); Mohamed et al. (2020), section 5.
    """

    name: ClassVar[str] = "pathwise"
    unbiased: ClassVar[str] = PATHWISE_CONDITION
    requires: ClassVar[str] = "rsample, not straight-through; f differentiable in x"
    max_order: ClassVar[float] = math.inf
    takes_baseline: ClassVar[bool] = False

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        if not dist.has_rsample:
            raise ValueError(
                f"Pathwise: {type(dist).__name__} has no rsample (not reparameterisable); use "
                f"estimator='score_function' (lt.ScoreFunction()) instead"
            )
        if _discrete_support(dist):
            raise ValueError(
                f"Pathwise: the rsample of {type(dist).__name__} is straight-through (discrete "
                f"values, the gradient of their mean), not a reparameterisation: biased; use "
                f"estimator='score_function', or lt.StraightThrough() if you accept the bias"
            )
        x = dist.rsample((samples,))
        cost = evaluate_cost(f, x, dist, samples)
        _guard_pathwise_gradient(x, "the pathwise estimator")
        return require_gradient(cost, x, "the pathwise estimator")


def _depends_on(out: Tensor, x: Tensor) -> bool:
    """Whether ``x`` is an ancestor of ``out`` in the autograd graph (walked, not run)."""
    if out.grad_fn is None or x.grad_fn is None:
        return False
    target, seen = x.grad_fn, set()
    stack: list[Node | None] = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is target:
            return True
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return False


@dataclass(frozen=True)
class Auto:
    """Pathwise when ``dist.rsample`` is a true reparameterisation (:func:`reparameterised`: not
    a straight-through or relaxed sampler, whatever ``has_rsample`` says) and f(x) is connected
    to x in the autograd graph, else the score function on the same samples. A NaN or inf
    gradient through the pathwise path raises in the backward pass, naming the score function as
    the way out.

    Connected is not enough for the pathwise estimator to be unbiased: f must be continuous in x
    and differentiable almost everywhere along the path. A piecewise-constant f (``round``,
    ``argmax``) is connected yet has zero derivative, and a step added to a smooth f
    (``x + (x > 0)``) is connected yet biased: name ``"score_function"`` for such f, and check a
    doubtful f with :func:`logtrick.diagnostics.check_pathwise`. A baseline is used only when the
    score function is picked (a warning says when it goes unused).
    """

    name: ClassVar[str] = "auto"
    unbiased: ClassVar[str] = "as the estimator it picks: pathwise " + PATHWISE_CONDITION
    requires: ClassVar[str] = "log_prob; for pathwise: " + REPARAMETERISATION_RULE
    max_order: ClassVar[float] = math.inf
    takes_baseline: ClassVar[bool] = True  # used when the score function is picked

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        if not reparameterised(dist):
            return ScoreFunction().terms(f, dist, samples, baseline, context)
        x = dist.rsample((samples,))
        cost = evaluate_cost(f, x, dist, samples)
        if _depends_on(cost, x):
            _guard_pathwise_gradient(x, "estimator='auto', which took the pathwise path")
            if resolve_baseline(baseline).active:
                warnings.warn(
                    "baseline: estimator='auto' picked the pathwise estimator (f is "
                    "differentiable in x), which has no score term: the baseline is unused",
                    stacklevel=3,
                )
            return cost
        # f(x) does not reach x: reuse it (f is called once) with the score-function terms
        return _score_function(f, dist, x.detach(), baseline, context, False, cost)


ESTIMATORS: dict[str, type] = {"score_function": ScoreFunction, "pathwise": Pathwise, "auto": Auto}


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
            :data:`ESTIMATORS` or an estimator object. ``"auto"`` picks pathwise when f is
            differentiable in x, which is unbiased only if f is also continuous along the path.
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
