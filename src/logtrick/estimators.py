r"""Gradient estimators of :math:`\nabla_\theta \mathbb{E}_{p(x;\theta)}[f(x)]` and ``expectation``.

Every estimator is a small object with ``terms(f, dist, samples, baseline, context)`` returning
per-sample surrogate terms of shape ``(K,) + batch_shape``: their mean over the first dimension has
the Monte Carlo estimate as its value and the estimator as its gradient, and each term's gradient
is that sample's contribution (what :mod:`logtrick.diagnostics` measures).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.distributions.transforms import Transform

from logtrick.baselines import LeaveOneOut, resolve_baseline
from logtrick.surrogate import check_finite, score_terms

__all__ = [
    "ESTIMATORS",
    "Auto",
    "Estimator",
    "Pathwise",
    "ScoreFunction",
    "evaluate_cost",
    "expectation",
    "joint_log_prob",
    "resolve_estimator",
]

CostFn = Callable[[Tensor], Tensor]


class Estimator(Protocol):
    """The estimator protocol: per-sample surrogate terms, ``(K,) + batch_shape``."""

    name: ClassVar[str]

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
    batch = tuple(dist.batch_shape)
    allowed = [(samples, *batch[:j]) for j in range(len(batch), -1, -1)]
    if tuple(out.shape) not in allowed:
        raise ValueError(
            f"f: expected f(x) of shape (samples,) + batch_shape = {allowed[0]} (or with trailing "
            f"batch dimensions reduced: {allowed[1:]}) for x of shape {tuple(x.shape)}, got "
            f"{tuple(out.shape)}; reduce over the event dimensions inside f"
        )
    check_finite("f(x)", out)
    return out


def checked_score_terms(
    cost: Tensor, log_prob: Tensor, baseline: object, context: Tensor | None
) -> Tensor:
    """:func:`~logtrick.surrogate.surrogate` for a cost that :func:`evaluate_cost` already checked
    (shape and finiteness) and its :func:`joint_log_prob`: the checks are not paid twice."""
    if not cost.is_floating_point():  # integer or bool costs: a float baseline must not truncate
        cost = cost.to(log_prob.dtype)
    return score_terms(cost, log_prob, resolve_baseline(baseline), 0, context)


def _log_prob_of_own_samples(dist: Distribution, x: Tensor) -> Tensor:
    if not dist._validate_args:
        return dist.log_prob(x)
    dist._validate_args = False
    try:
        return dist.log_prob(x)
    finally:
        dist._validate_args = True


def joint_log_prob(dist: Distribution, x: Tensor, cost: Tensor) -> Tensor:
    """``dist.log_prob(x)`` summed over the trailing batch dimensions that ``cost`` reduced.

    ``x`` was drawn from ``dist`` itself, so it lies in the support: the distribution's sample
    validation (a support check per call) is skipped as redundant.
    """
    log_prob = _log_prob_of_own_samples(dist, x)
    extra = log_prob.dim() - cost.dim()
    return log_prob.sum(tuple(range(-extra, 0))) if extra else log_prob


@dataclass(frozen=True)
class ScoreFunction:
    r"""Score-function (REINFORCE, likelihood-ratio) estimator.

    .. math::  \nabla_\theta \mathbb{E}_p[f] \approx \frac1K \sum_{k=1}^K
               (f(x_k) - b_k)\, \nabla_\theta \log p(x_k;\theta), \quad x_k \sim p

    Requires: ``log_prob`` only. f may be a black box, non-differentiable, discrete. Unbiased for
    any baseline independent of the sample it multiplies; the variance grows with the magnitude of
    ``f - b`` and the dimension.

    References: Williams (1992); Glynn (1990); Mohamed et al. (2020), section 4.
    """

    name: ClassVar[str] = "score_function"
    unbiased: ClassVar[bool] = True

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        with torch.no_grad():
            x = dist.sample((samples,))
        return self.terms_at(f, dist, x, baseline, context)

    def terms_at(
        self, f: CostFn, dist: Distribution, x: Tensor, baseline: object, context: Tensor | None
    ) -> Tensor:
        """The terms for given samples ``x`` (drawn without gradient)."""
        cost = evaluate_cost(f, x, dist, x.shape[0])
        return checked_score_terms(cost, joint_log_prob(dist, x, cost), baseline, context)


@dataclass(frozen=True)
class Pathwise:
    r"""Pathwise (reparameterisation) estimator.

    .. math::  \nabla_\theta \mathbb{E}_p[f] \approx \frac1K \sum_k
               \nabla_x f(x)\big|_{x = g(\epsilon_k;\theta)}\, \nabla_\theta g(\epsilon_k;\theta)

    Requires: ``dist.has_rsample`` and f differentiable in x. Unbiased; usually far lower variance
    than the score function. The baseline is ignored (it would add nothing in expectation).

    References: Kingma & Welling (2014); Rezende et al. (2014); Mohamed et al. (2020), section 5.
    """

    name: ClassVar[str] = "pathwise"
    unbiased: ClassVar[bool] = True

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        if not dist.has_rsample:
            raise ValueError(
                f"Pathwise: {type(dist).__name__} has no rsample (not reparameterisable); use "
                f"estimator='score_function' (lt.ScoreFunction()) instead"
            )
        return evaluate_cost(f, dist.rsample((samples,)), dist, samples)


def _depends_on(out: Tensor, x: Tensor) -> bool:
    """Whether ``x`` is an ancestor of ``out`` in the autograd graph (walked, not run)."""
    if out.grad_fn is None or x.grad_fn is None:
        return False
    target, seen, stack = x.grad_fn, set(), [out.grad_fn]
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
    else the score function on the same samples. A piecewise-constant f (``round``, ``argmax``) is
    connected yet has zero derivative: name ``"score_function"`` for it."""

    name: ClassVar[str] = "auto"
    unbiased: ClassVar[bool] = True

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        if not dist.has_rsample:
            return ScoreFunction().terms(f, dist, samples, baseline, context)
        x = dist.rsample((samples,))
        cost = evaluate_cost(f, x, dist, samples)
        if _depends_on(cost, x):
            return cost
        # f(x) does not reach x: reuse it (f is called once) with the score-function terms
        log_prob = joint_log_prob(dist, x.detach(), cost)
        return checked_score_terms(cost, log_prob, baseline, context)


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


def _has_grad_params(obj: object, depth: int = 0) -> bool:
    """Whether a tensor that requires grad is among the attributes of ``obj``, searching nested
    distributions (``Independent.base_dist``) and transforms (``AffineTransform.loc``)."""
    values = obj if isinstance(obj, (list, tuple)) else vars(obj).values()
    for value in values:
        if isinstance(value, Tensor) and value.requires_grad:
            return True
        nested = isinstance(value, (Distribution, Transform, list, tuple))
        if nested and depth < 4 and _has_grad_params(value, depth + 1):
            return True
    return False


def check_samples(samples: object) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        raise ValueError(
            f"samples: expected a positive int (the number of draws K), got {samples!r}"
        )
    return samples


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
        dist: any ``torch.distributions.Distribution`` (``log_prob`` for the score function,
            ``rsample`` for the pathwise estimator).
        samples: K > 0 draws.
        estimator: ``"auto"``, ``"score_function"``, ``"pathwise"`` or an estimator object.
        baseline: see :func:`logtrick.surrogate` (ignored by the pathwise estimator).
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
    check_samples(samples)
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"dist: expected a torch.distributions.Distribution, got {type(dist).__name__}"
        )
    if torch.is_grad_enabled() and not _has_grad_params(dist):
        warnings.warn(
            f"dist: no parameter of this {type(dist).__name__} requires grad, so the estimate "
            f"carries no gradient for it (fine if you only want the value)",
            stacklevel=2,
        )
    est = resolve_estimator(estimator)
    baseline = resolve_baseline(baseline)  # bad names fail here, even where b goes unused
    if isinstance(baseline, LeaveOneOut) and samples < 2:
        raise ValueError(
            f"LeaveOneOut: needs at least 2 samples, got samples={samples}; use samples >= 2 "
            f"or another baseline"
        )
    return est.terms(f, dist, samples, baseline, context).mean(0)
