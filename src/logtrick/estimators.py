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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor
from torch.autograd.graph import Node
from torch.distributions import Distribution
from torch.distributions.transforms import Transform

from logtrick.baselines import Baseline, resolve_baseline, score_terms
from logtrick.checks import (
    check_baseline_used,
    check_distribution,
    check_finite,
    check_fixed_support,
    check_positive_int,
)

__all__ = [
    "ESTIMATORS",
    "Auto",
    "Estimator",
    "Pathwise",
    "ScoreFunction",
    "estimator_table",
    "evaluate_cost",
    "expectation",
    "joint_log_prob",
    "resolve_estimator",
    "resolve_pair",
]

CostFn = Callable[[Tensor], Tensor]

PATHWISE_CONDITION = "if f is continuous in x and differentiable almost everywhere along the path"
"""When the pathwise estimator is unbiased: a step in f (``x + (x > 0)``) biases it."""


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
    the relaxations, ...) refuses an active baseline (:func:`logtrick.checks.check_baseline_used`).
    An estimator object without this attribute is taken to use its baseline."""

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor: ...


def evaluate_cost(f: CostFn, x: Tensor, dist: Distribution, samples: int) -> Tensor:
    """``f(x)`` checked: finite, of shape ``(K,) + batch_shape[:j]`` for some ``j``.

    f may reduce trailing batch dimensions (e.g. ``.sum(-1)`` over independent Bernoulli
    components): those components then form one joint sample and their log-probabilities are
    summed (see :func:`joint_log_prob`).
    """
    out = f(x)
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out, dtype=torch.get_default_dtype())
    shape, batch = out.shape, dist.batch_shape
    if not shape or shape[0] != samples or shape[1:] != batch[: len(shape) - 1]:
        allowed = [(samples, *batch[:j]) for j in range(len(batch), -1, -1)]
        raise ValueError(
            f"f: expected f(x) of shape (samples,) + batch_shape = {allowed[0]} (or with trailing "
            f"batch dimensions reduced: {allowed[1:]}) for x of shape {tuple(x.shape)}, got "
            f"{tuple(out.shape)}; reduce over the event dimensions inside f"
        )
    check_finite("f(x)", out)
    return out


def joint_log_prob(dist: Distribution, x: Tensor, cost: Tensor) -> Tensor:
    """``dist.log_prob(x)`` summed over the trailing batch dimensions that ``cost`` reduced.

    ``x`` was drawn from ``dist`` itself, so it lies in the support: the distribution's sample
    validation (a support check per call) is skipped as redundant.
    """
    validate = dist._validate_args
    dist._validate_args = False
    try:
        log_prob = dist.log_prob(x)
    finally:
        dist._validate_args = validate
    extra = log_prob.dim() - cost.dim()
    return log_prob.sum(tuple(range(-extra, 0))) if extra else log_prob


def _score_function(
    f: CostFn, dist: Distribution, x: Tensor, baseline: object, context: Tensor | None,
    reduce: bool, cost: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """The score-function terms (their mean if ``reduce``) at samples ``x`` drawn without
    gradient; ``cost`` if f was already evaluated there."""
    check_fixed_support("dist", dist)
    if cost is None:
        cost = evaluate_cost(f, x, dist, x.shape[0])
    log_prob = joint_log_prob(dist, x, cost)
    if not cost.is_floating_point():  # integer or bool costs: a float baseline must not truncate
        cost = cost.to(log_prob.dtype)
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
        return _score_function(f, dist, x.detach() if x.requires_grad else x, baseline, context,
                               True)  # fmt: skip

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

    Requires: ``dist.has_rsample`` and f differentiable in x. Unbiased *if f is continuous in x
    and differentiable almost everywhere along the path* (then the derivative and the expectation
    commute); a jump in f (``x + (x > 0)``, ``round``) is invisible to autograd and biases it:
    check your f with :func:`logtrick.diagnostics.check_pathwise`. Usually far lower variance than
    the score function. It has no score term, so it refuses a baseline.

    References: Kingma & Welling (2014); Rezende et al. (2014); Mohamed et al. (2020), section 5.
    """

    name: ClassVar[str] = "pathwise"
    unbiased: ClassVar[str] = PATHWISE_CONDITION
    requires: ClassVar[str] = "rsample; f differentiable in x"
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
        x = dist.rsample((samples,))
        cost = evaluate_cost(f, x, dist, samples)
        if x.requires_grad and not cost.requires_grad:
            raise ValueError(
                "f: the pathwise estimator differentiates f(x) through x, but f(x) carries no "
                "gradient (f detaches x, or leaves torch: numpy, .item(), round); use "
                "estimator='score_function' for a black-box f"
            )
        return cost


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
    """Pathwise when ``dist`` has ``rsample`` and f(x) is connected to x in the autograd graph,
    else the score function on the same samples.

    Connected is not enough for the pathwise estimator to be unbiased: f must be continuous in x
    and differentiable almost everywhere along the path. A piecewise-constant f (``round``,
    ``argmax``) is connected yet has zero derivative, and a step added to a smooth f
    (``x + (x > 0)``) is connected yet biased: name ``"score_function"`` for such f, and check a
    doubtful f with :func:`logtrick.diagnostics.check_pathwise`. A baseline is used only when the
    score function is picked (a warning says when it goes unused).
    """

    name: ClassVar[str] = "auto"
    unbiased: ClassVar[str] = "as the estimator it picks: pathwise " + PATHWISE_CONDITION
    requires: ClassVar[str] = "log_prob; rsample and f differentiable in x for pathwise"
    max_order: ClassVar[float] = math.inf
    takes_baseline: ClassVar[bool] = True  # used when the score function is picked

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        if not dist.has_rsample:
            return ScoreFunction().terms(f, dist, samples, baseline, context)
        x = dist.rsample((samples,))
        cost = evaluate_cost(f, x, dist, samples)
        if _depends_on(cost, x):
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
        if spec not in ESTIMATORS:  # the other modules' estimators register with the package
            import logtrick._api  # noqa: F401  (loaded on first use of logtrick.NAME)
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
    rows = ["| name | class | unbiased | requires | derivative orders | baseline |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, cls in sorted(ESTIMATORS.items()):
        order = getattr(cls, "max_order", 1)
        orders = "any" if order == math.inf else ("first only" if order == 1 else f"up to {order}")
        takes = "used" if getattr(cls, "takes_baseline", True) else "refused (no score term)"
        rows.append(f"| `{name}` | `{cls.__name__}` | {getattr(cls, 'unbiased', '?')} | "
                    f"{getattr(cls, 'requires', '?')} | {orders} | {takes} |")  # fmt: skip
    return "\n".join(rows)


def _tensors_of(obj: object, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Tensor]]:
    """``(name, tensor)`` for the tensors among the attributes of ``obj``, searching nested
    distributions (``Independent.base_dist``) and transforms (``AffineTransform.loc``)."""
    items = enumerate(obj) if isinstance(obj, (list, tuple)) else vars(obj).items()
    for key, value in items:
        name = (
            f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}{'.' if prefix else ''}{key}"
        )
        if isinstance(value, Tensor):
            yield name, value
        elif isinstance(value, (Distribution, Transform, list, tuple)) and depth < 4:
            yield from _tensors_of(value, name, depth + 1)


def _integer_parameters(dist: Distribution) -> list[str]:
    return [f"{name} ({t.dtype})" for name, t in _tensors_of(dist)
            if not (t.is_floating_point() or t.is_complex())]  # fmt: skip


def _warn_no_gradient(dist: Distribution) -> None:
    """The estimate carries no gradient: say why (no parameter requires grad, or an integer one)."""
    if any(t.requires_grad for _, t in _tensors_of(dist)):
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
        out = (estimate(f, dist, samples, bl, context) if estimate is not None
               else est.terms(f, dist, samples, bl, context).mean(0))  # fmt: skip
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
