r"""The pathwise (reparameterisation) estimator, and ``auto``, which chooses it only where the
sampler is a true reparameterisation.

The rule ``auto`` chooses by is stated once, here, beside the estimators' metadata
(:data:`REPARAMETERISATION_RULE`): ``has_rsample`` alone is not enough, since straight-through and
relaxed samplers set it too.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch.distributions as D
from torch import Tensor
from torch.autograd.graph import Node
from torch.distributions import Distribution

from logtrick.baselines import resolve_baseline
from logtrick.checks import transformed
from logtrick.costs import CostFn, evaluate_cost, require_gradient
from logtrick.score_function import ScoreFunction, _score_function

__all__ = [
    "NOT_REPARAMETERISED",
    "PATHWISE_CONDITION",
    "REPARAMETERISATION_RULE",
    "Auto",
    "Pathwise",
    "reparameterised",
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
    """Pathwise when ``dist.rsample`` is a true reparameterisation (``reparameterised(dist)``: not
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
