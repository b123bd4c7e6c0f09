r"""Baselines and control variates for the score-function estimator, and the one path that
applies them.

For any ``b`` that does not depend on the sample ``x`` it multiplies,

.. math::  \mathbb{E}_p[(f(x) - b)\, \nabla_\theta \log p(x;\theta)]
           = \nabla_\theta \mathbb{E}_p[f(x)],

because :math:`\mathbb{E}_p[\nabla_\theta \log p] = 0`. A good ``b`` is close to ``f(x)`` and so
lowers the variance. Every baseline is a small object that satisfies the :class:`Baseline`
protocol; its state, if any, lives in the object you hold (no global store). Every estimator
applies a baseline through one function, :func:`score_terms` ("cost, log-prob, baseline ->
score terms"); no other module looks at a baseline's class. Short names accepted wherever a
baseline is: ``None``/``"none"``, a number or a tensor (constant), ``"moving_average"``,
``"leave_one_out"``, or any callable ``(cost, sample_dim, context) -> b``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from logtrick.checks import check_broadcasts_to, check_finite
from logtrick.collective import all_reduce_sum
from logtrick.dice import first_order_only, magic_box, score_term
from logtrick.optimal_scale import OptimalScale

__all__ = [
    "Baseline",
    "Constant",
    "FromFunction",
    "Learned",
    "LeaveOneOut",
    "MovingAverage",
    "NoBaseline",
    "OptimalScale",
    "resolve_baseline",
    "score_terms",
]

Parts = tuple[Tensor | float | None, Tensor | None]
"""What a baseline contributes: ``(b, extra)`` (see :meth:`Baseline.parts`)."""


@runtime_checkable
class Baseline(Protocol):
    """Everything an estimator asks of a baseline; :func:`score_terms` is its one user.

    ``b_k`` must not depend on the sample ``x_k`` it multiplies: it may use the *other* samples'
    costs (leave-one-out), earlier calls (moving average) or a context independent of ``x``
    (learned); the estimator is then unbiased. A baseline whose class sets
    ``uses_other_samples = True`` is refused by :func:`score_terms` where the other samples share
    ``x_k`` (a log-probability of size 1 along the sample dimension).
    """

    active: ClassVar[bool]
    """Whether it changes the estimator at all (``False`` only for :class:`NoBaseline`); an
    estimator without a score term (pathwise) refuses an active baseline."""
    min_samples: ClassVar[int]
    """Samples along ``sample_dim`` it needs (2 for leave-one-out)."""
    max_order: ClassVar[float]
    """Highest derivative order of :math:`\\mathbb{E}[f]` still estimated without bias with it
    (``math.inf`` for a scalar ``b``; 1 for per-parameter coefficients)."""

    def __call__(
        self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None
    ) -> Tensor | None:
        """The value ``b``, broadcasting to ``cost`` without enlarging it."""
        ...

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        r"""How it combines with the score: ``(b, extra)``.

        ``b``: the scalar-per-sample baseline (a tensor or a number; ``None`` for zero), which
        enters the score term as :math:`-b\,\nabla\log p`. ``extra``: ``None`` or per-sample
        terms of value zero added to the surrogate: the gradient of the baseline's own training
        loss (``Learned``) or per-parameter coefficients (``OptimalScale``). ``cost`` is detached
        unless the caller keeps its graph on purpose (RELAX's residual).
        """
        ...


def score_terms(
    cost: Tensor,
    log_prob: Tensor,
    baseline: Baseline,
    sample_dim: int = 0,
    context: Tensor | None = None,
    *,
    with_cost: bool = True,
    reduce: bool = False,
    name: str = "baseline",
) -> Tensor | None:
    r"""Cost, log-probability, baseline -> score terms: the one place a baseline is applied.

    .. math::  L_k = c_k\,\boxdot(\log p_k) + (1 - \boxdot(\log p_k))\,\bot(b_k) + e_k,
               \qquad L_k = c_k,\qquad
               \nabla L_k = (c_k - b_k)\nabla\log p_k + \nabla c_k + \nabla e_k

    with :math:`e_k` the baseline's value-zero extra terms. Every higher derivative is DiCE's
    (for baselines of ``max_order`` 1 a second derivative raises instead).

    Args:
        cost: per-sample costs, floating point, checked finite by the caller.
        log_prob: the log-probability of each sample, the shape of ``cost`` (with
            ``with_cost=False``: any shape broadcasting to it).
        baseline: a resolved baseline (:func:`resolve_baseline`).
        sample_dim: the dimension that indexes the samples.
        context: input of a ``Learned`` baseline.
        with_cost: ``True``: the full terms above. ``False``: only the baseline's part,
            :math:`(1 - \boxdot(\log p))\,b + e` (value zero, gradient :math:`-b\nabla\log p`),
            for callers that box the cost themselves (several nodes, RELAX's residual); ``b`` then
            keeps the graph of the ``cost`` it is computed from, and ``None`` means no terms.
        reduce: return the mean over dim 0 (``sample_dim`` must be 0; with ``with_cost``).
        name: how error messages name the baseline (e.g. ``"baselines['x1']"``).

    Returns:
        Terms shaped like ``cost`` (``cost.shape[1:]`` if ``reduce``), or ``None``.
    """
    if with_cost and not baseline.active:  # b = 0 and nothing extra: the hot path
        return score_term(cost, log_prob, None, reduce)
    if getattr(baseline, "uses_other_samples", False) and _shared(log_prob, cost, sample_dim):
        raise ValueError(
            f"{name}: {type(baseline).__name__} builds b_k from the other samples' costs, but the "
            f"log-probability {tuple(log_prob.shape)} has size 1 along sample_dim={sample_dim} of "
            f"the costs {tuple(cost.shape)}: one sample shared by every cost, so each b_k depends "
            f"on it and its gradient would be 0; use a baseline independent of this call's "
            f"samples (lt.MovingAverage() kept across calls, a constant, lt.Learned) or None"
        )
    seen = cost.detach() if with_cost and cost.requires_grad else cost
    b, extra = baseline.parts(seen, log_prob, sample_dim, context)
    if isinstance(b, Tensor):
        label = f"{name} ({type(baseline).__name__}'s b)"
        check_broadcasts_to(label, b, cost.shape, "the cost's shape")
        check_finite(label, b)
        if with_cost:
            b = b.detach()
    elif b is not None and not math.isfinite(b):
        raise ValueError(f"{name}: expected a finite number, got {b!r}")
    if with_cost:
        out: Tensor | None = score_term(cost, log_prob, b, reduce)
    else:
        out = None if b is None else (1.0 - magic_box(log_prob)) * b
    if extra is not None:
        extra = extra.mean(0) if reduce else extra
        out = extra if out is None else out + extra
    if out is not None and baseline.max_order < 2:
        out = first_order_only(out, type(baseline).__name__)
    return out


def _shared(log_prob: Tensor, cost: Tensor, sample_dim: int) -> bool:
    """Whether ``log_prob`` broadcasts along the sample dimension of ``cost`` (K > 1): one sample
    shared by all K costs."""
    if cost.dim() == 0 or cost.shape[sample_dim] < 2:
        return False
    from_right = cost.dim() - (sample_dim % cost.dim())
    return log_prob.dim() < from_right or log_prob.shape[-from_right] == 1


@dataclass
class NoBaseline:
    """The plain estimator: ``b = 0``."""

    active: ClassVar[bool] = False
    min_samples: ClassVar[int] = 1
    max_order: ClassVar[float] = math.inf

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        return torch.zeros((), dtype=cost.dtype, device=cost.device)

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        return None, None


@dataclass
class Constant:
    """A fixed ``b``: a number, or a tensor (e.g. critic values) broadcasting to the cost's shape
    without enlarging it. A tensor enters detached: it gets no gradient from the score term."""

    value: float | Tensor = 0.0

    active: ClassVar[bool] = True
    min_samples: ClassVar[int] = 1
    max_order: ClassVar[float] = math.inf

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        return torch.as_tensor(self.value, dtype=cost.dtype, device=cost.device)

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        value = self.value
        if isinstance(value, Tensor) and (value.device != cost.device or value.dtype != cost.dtype):
            value = value.to(cost.device, cost.dtype)
        return (float(value) if isinstance(value, int) else value), None


@dataclass
class MovingAverage:
    r"""Exponential moving average of past costs, bias-corrected during warm-up.

    .. math::  m_t = \beta m_{t-1} + (1-\beta)\,\bar c_t,\qquad
               b_{t+1} = m_t / (1 - \beta^t)

    ``b`` for the current call is computed from *earlier* calls only, so it is independent of the
    current samples (unbiased). On the first call there is no history and ``b = 0``. Keep one
    instance across optimisation steps: a short name (``"moving_average"``) builds a fresh, empty
    one on every call, which is then exactly the plain estimator (``b = 0``).

    By default the average is per batch element (the cost is averaged over ``sample_dim`` only),
    right when a batch position always holds the same problem. The first call fixes that shape. A
    later call whose per-element shape differs (e.g. a smaller last batch) cannot line its
    positions up with the averaged ones: it gets the scalar mean of the bias-corrected averages as
    ``b`` (zero before any history) and leaves the state unchanged. With shuffled minibatches
    (each position a different data point) use ``per_element=False``: one scalar average that
    every call updates, whatever its shape.

    Data-parallel training (each rank draws its share of the samples): with ``group`` (a
    ``torch.distributed`` process group) the cost sums and counts that enter :math:`\bar c_t` are
    all-reduced over the group, so :math:`\bar c_t` is the mean over *all* ranks' samples and
    every rank holds the same average and subtracts the same ``b``; the gradients averaged over
    the ranks are then the single-process estimator on the concatenated samples. Every rank must
    call it the same number of times with the same per-element shape (ranks split
    ``sample_dim``; with ``per_element=False`` any split). ``group=None``, or no initialised
    process group: nothing is communicated.

    Args:
        decay: :math:`\beta \in [0, 1)`.
        per_element: keep one average per batch element (``True``) or one scalar (``False``).
        group: process group whose ranks share the average (``None``: this process alone).
    """

    decay: float = 0.9
    per_element: bool = True
    average: Tensor | None = field(default=None, repr=False)
    steps: int = 0
    group: Any = field(default=None, repr=False, compare=False)

    active: ClassVar[bool] = True
    min_samples: ClassVar[int] = 1
    max_order: ClassVar[float] = math.inf

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay: expected a float in [0, 1), got {self.decay!r}")

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        c = cost.detach()
        total = c.sum(sample_dim, keepdim=True) if self.per_element else c.sum().reshape(())
        count = torch.tensor(c.numel() // max(total.numel(), 1), dtype=c.dtype, device=c.device)
        total, count = all_reduce_sum([total, count], self.group)
        mean = total / count
        if self.average is None:
            self.average, self.steps = torch.zeros_like(mean), 0
        corrected = self.average / (1.0 - self.decay**self.steps) if self.steps else None
        if self.average.shape != mean.shape:  # another batch shape: the scalar mean, no update
            return (
                torch.zeros((), dtype=c.dtype, device=c.device)
                if corrected is None
                else (corrected.mean().to(c.dtype))
            )
        self.average = self.decay * self.average + (1.0 - self.decay) * mean
        self.steps += 1
        return torch.zeros_like(mean) if corrected is None else corrected

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        return self(cost, sample_dim), None


@dataclass
class LeaveOneOut:
    r"""The mean of the *other* samples' costs (RLOO; Kool et al. 2019).

    .. math::  b_k = \frac{1}{K-1} \sum_{j \neq k} f(x_j)

    Unbiased because the samples are independent; needs ``K >= 2`` samples along ``sample_dim``,
    each with its own log-probability: a log-probability of size 1 along ``sample_dim`` (one
    sample shared by the K costs, e.g. an upstream node in :func:`logtrick.dice_surrogate`) is
    refused, since every ``b_k`` would depend on that sample (``uses_other_samples``).
    With it, :math:`\frac1K\sum_k (f_k - b_k) s_k = \frac{1}{K-1}\sum_k (f_k - \bar f) s_k`.

    Data-parallel training: it has no state and no ``group``; each rank's ``b_k`` is the mean of
    the other samples *on that rank* (per-rank leave-one-out, :math:`K` = the rank's samples).
    Still unbiased, with slightly more variance than the leave-one-out over all ranks' samples;
    keep the samples of one problem on one rank.
    """

    active: ClassVar[bool] = True
    min_samples: ClassVar[int] = 2
    max_order: ClassVar[float] = math.inf
    uses_other_samples: ClassVar[bool] = True

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        k = cost.shape[sample_dim] if cost.dim() else 1
        if k < 2:
            raise ValueError(
                f"LeaveOneOut: needs at least 2 samples along sample_dim={sample_dim}, "
                f"got cost of shape {tuple(cost.shape)}; use samples >= 2 or another baseline"
            )
        return (cost.sum(sample_dim, keepdim=True) - cost) / (k - 1)

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        return self(cost, sample_dim), None


class Learned(nn.Module):
    r"""A baseline predicted by a network of a context, trained by squared error.

    .. math::  b = g_\phi(\bot(\text{context})),\qquad
               \mathcal L(\phi) = \tfrac12 (g_\phi(\bot(\text{context})) - \bot(f(x)))^2

    The context may be any tensor that does not depend on the sample ``x``: the input of an
    encoder, the state of a policy, or an encoder's output that depends on :math:`\theta` (the
    network sees it detached, so neither ``b`` nor the loss sends a gradient into
    :math:`\theta`). ``b`` enters the score term detached. With ``fold_loss=True`` (default) the
    squared-error loss is added to the returned surrogate with *value zero*, so ``backward()``
    trains :math:`\phi` (and only :math:`\phi`); with ``fold_loss=False`` call :meth:`loss` and
    add it yourself.

    Args:
        module: maps the context to a prediction that broadcasts to the cost's shape without
            enlarging it (a trailing dimension of size 1 is squeezed, so ``(B, 1)`` serves costs
            ``(K, B)``).
        fold_loss: fold the baseline's loss into the surrogate (value zero).
    """

    active: ClassVar[bool] = True
    min_samples: ClassVar[int] = 1
    max_order: ClassVar[float] = math.inf

    def __init__(self, module: nn.Module, fold_loss: bool = True) -> None:
        super().__init__()
        self.module = module
        self.fold_loss = fold_loss

    def forward(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("context: a Learned baseline needs the context it predicts from")
        pred = self.module(context.detach())
        if pred.dim() > 1 and pred.shape[-1] == 1:
            pred = pred.squeeze(-1)  # (B, 1) -> (B,): one prediction per context
        return check_broadcasts_to(
            "baseline (Learned's module output)", pred, cost.shape, "the cost's shape"
        )

    def loss(self, cost: Tensor, context: Tensor, sample_dim: int = 0) -> Tensor:
        """Mean squared error ``0.5 * (g(context) - cost)^2``; trains only the module."""
        return 0.5 * (self(cost, sample_dim, context) - cost.detach()).pow(2).mean()

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        pred = self(cost, sample_dim, context)
        if not self.fold_loss:
            return pred, None
        sq = 0.5 * (pred - cost.detach()).pow(2)
        return pred, sq - sq.detach()


@dataclass
class FromFunction:
    """A baseline given as a function ``fn(cost, sample_dim, context) -> b``."""

    fn: Callable[..., Tensor]

    active: ClassVar[bool] = True
    min_samples: ClassVar[int] = 1
    max_order: ClassVar[float] = math.inf

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        return self.fn(cost, sample_dim, context)

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> Parts:
        b = self.fn(cost, sample_dim, context)
        if not isinstance(b, Tensor):
            b = torch.as_tensor(b, dtype=cost.dtype, device=cost.device)
        return b, None


_NAMES = {"none": NoBaseline, "moving_average": MovingAverage, "leave_one_out": LeaveOneOut}
_NONE = NoBaseline()
_BUILTIN = (NoBaseline, Constant, MovingAverage, LeaveOneOut, Learned, OptimalScale, FromFunction)


def resolve_baseline(spec: object) -> Baseline:
    """Turn a short name, a number, a tensor, a function or a baseline object into a baseline.

    A short name builds a fresh object on every call (a ``"moving_average"`` then has no
    history: keep a ``MovingAverage()`` instance to carry one across steps).
    """
    if spec is None:
        return _NONE
    if isinstance(spec, _BUILTIN):
        return spec
    if isinstance(spec, bool):
        raise TypeError(f"baseline: expected None, a number, a name or a baseline, got {spec!r}")
    if isinstance(spec, (int, float, Tensor)):
        return Constant(spec)
    if isinstance(spec, str):
        if spec not in _NAMES:
            raise ValueError(f"baseline: unknown name {spec!r}; expected one of {sorted(_NAMES)}")
        return _NAMES[spec]()
    if isinstance(spec, Baseline):
        return spec
    if callable(spec):
        return FromFunction(spec)
    raise TypeError(f"baseline: expected None, a number, a name or a baseline, got {spec!r}")
