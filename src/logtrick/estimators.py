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

import torch
from torch import Tensor
from torch.distributions import Distribution

from logtrick.arm import ARM, DisARM
from logtrick.baselines import Baseline, resolve_baseline
from logtrick.checks import check_distribution, check_positive_int
from logtrick.costs import CostFn, tensors_of
from logtrick.gumbel import GumbelSoftmax, StraightThrough
from logtrick.measure_valued import DeltaMethod, MeasureValued
from logtrick.pathwise import Auto, Pathwise
from logtrick.rebar import Rebar, Relax
from logtrick.score_function import Estimator, ScoreFunction

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "ScoreFunction",
    "estimator_table",
    "expectation",
    "resolve_estimator",
    "resolve_pair",
]


ESTIMATORS: dict[str, type] = {
    cls.name: cls
    for cls in (
        ScoreFunction,
        Pathwise,
        Auto,
        GumbelSoftmax,
        StraightThrough,
        Rebar,
        Relax,
        ARM,
        DisARM,
        MeasureValued,
        DeltaMethod,
    )
}
"""Short name -> estimator class, every family's (each module defines its own; this table sits
above them all)."""


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
