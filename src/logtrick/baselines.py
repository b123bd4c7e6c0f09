r"""Baselines and control variates for the score-function estimator.

For any ``b`` that does not depend on the sample ``x`` it multiplies,

.. math::  \mathbb{E}_p[(f(x) - b)\, \nabla_\theta \log p(x;\theta)]
           = \nabla_\theta \mathbb{E}_p[f(x)],

because :math:`\mathbb{E}_p[\nabla_\theta \log p] = 0`. A good ``b`` is close to ``f(x)`` and so
lowers the variance. Every baseline here is a small object called as
``baseline(cost, sample_dim=0, context=None) -> b`` where ``b`` broadcasts against ``cost``;
its state, if any, lives in the object you hold (no global store). Short names accepted wherever
a baseline is:
``None``/``"none"``, a float (constant), ``"moving_average"``, ``"leave_one_out"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "Baseline",
    "Constant",
    "Learned",
    "LeaveOneOut",
    "MovingAverage",
    "NoBaseline",
    "OptimalScale",
    "resolve_baseline",
]


@runtime_checkable
class Baseline(Protocol):
    """``b = baseline(cost, sample_dim, context)``: a value independent of each sample it meets."""

    def __call__(
        self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None
    ) -> Tensor: ...


@dataclass
class NoBaseline:
    """The plain estimator: ``b = 0``."""

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        return torch.zeros((), dtype=cost.dtype, device=cost.device)


@dataclass
class Constant:
    """A fixed ``b`` (a float or a tensor that broadcasts against the cost)."""

    value: float | Tensor = 0.0

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        return torch.as_tensor(self.value, dtype=cost.dtype, device=cost.device)


@dataclass
class MovingAverage:
    r"""Exponential moving average of past costs, bias-corrected during warm-up.

    .. math::  m_t = \beta m_{t-1} + (1-\beta)\,\bar c_t,\qquad
               b_{t+1} = m_t / (1 - \beta^t)

    ``b`` for the current call is computed from *earlier* calls only, so it is independent of the
    current samples (unbiased). On the first call there is no history and ``b = 0``. Keep one
    instance across optimisation steps; a short name creates a fresh, empty one each call.
    By default the average is per batch element (the cost is averaged over ``sample_dim`` only),
    right when a batch position always holds the same problem. With shuffled minibatches (each
    position a different data point) use ``per_element=False``: one scalar average of all costs.

    Args:
        decay: :math:`\beta \in [0, 1)`.
        per_element: keep one average per batch element (``True``) or one scalar (``False``).
    """

    decay: float = 0.9
    per_element: bool = True
    average: Tensor | None = field(default=None, repr=False)
    steps: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay: expected a float in [0, 1), got {self.decay!r}")

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        c = cost.detach()
        mean = c.mean(sample_dim, keepdim=True) if self.per_element else c.mean().reshape(())
        if self.average is None or self.average.shape != mean.shape:
            self.average, self.steps = torch.zeros_like(mean), 0
        if self.steps == 0:
            b = torch.zeros_like(mean)
        else:
            b = self.average / (1.0 - self.decay**self.steps)
        self.average = self.decay * self.average + (1.0 - self.decay) * mean
        self.steps += 1
        return b


@dataclass
class LeaveOneOut:
    r"""The mean of the *other* samples' costs (RLOO; Kool et al. 2019).

    .. math::  b_k = \frac{1}{K-1} \sum_{j \neq k} f(x_j)

    Unbiased because the samples are independent; needs ``K >= 2`` samples along ``sample_dim``.
    With it, :math:`\frac1K\sum_k (f_k - b_k) s_k = \frac{1}{K-1}\sum_k (f_k - \bar f) s_k`.
    """

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        k = cost.shape[sample_dim] if cost.dim() else 1
        if k < 2:
            raise ValueError(
                f"LeaveOneOut: needs at least 2 samples along sample_dim={sample_dim}, "
                f"got cost of shape {tuple(cost.shape)}; use samples >= 2 or another baseline"
            )
        c = cost.detach()
        return (c.sum(sample_dim, keepdim=True) - c) / (k - 1)


class Learned(nn.Module):
    r"""A baseline predicted by a network of a context, trained by squared error.

    .. math::  b = g_\phi(\text{context}),\qquad
               \mathcal L(\phi) = \tfrac12 (g_\phi(\text{context}) - f(x))^2

    The context must not depend on the sample ``x`` (e.g. the input of an encoder, the state of a
    policy), which keeps the estimator unbiased. ``surrogate``/``expectation`` call it with their
    ``context`` argument and detach ``b`` in the score term. With ``fold_loss=True`` (default) the
    squared-error loss is added to the returned surrogate with *value zero*, so ``backward()`` also
    trains :math:`\phi`; with ``fold_loss=False`` call :meth:`loss` and add it yourself.

    Args:
        module: maps the context to a prediction that broadcasts exactly to the cost's shape
            (a trailing dimension of size 1 is squeezed, so ``(B, 1)`` serves costs ``(K, B)``).
        fold_loss: fold the baseline's loss into the surrogate (value zero).
    """

    def __init__(self, module: nn.Module, fold_loss: bool = True) -> None:
        super().__init__()
        self.module = module
        self.fold_loss = fold_loss

    def forward(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("context: a Learned baseline needs the context it predicts from")
        pred = self.module(context)
        if pred.dim() > 1 and pred.shape[-1] == 1:
            pred = pred.squeeze(-1)  # (B, 1) -> (B,): one prediction per context
        try:
            shape = torch.broadcast_shapes(pred.shape, cost.shape)
        except RuntimeError:
            shape = None
        if shape != cost.shape:
            raise ValueError(
                f"Learned baseline: the module's output has shape {tuple(pred.shape)}, which does "
                f"not broadcast to the cost's shape {tuple(cost.shape)}"
            )
        return pred

    def loss(self, cost: Tensor, context: Tensor, sample_dim: int = 0) -> Tensor:
        """Mean squared error ``0.5 * (g(context) - cost)^2`` of the prediction (cost detached)."""
        pred = self(cost, sample_dim, context)
        return 0.5 * (pred - cost.detach()).pow(2).mean()


class OptimalScale:
    r"""Per-parameter, variance-minimising baseline, estimated without bias by leaving one out.

    For parameter element :math:`i` the variance of :math:`(f - a_i) s_i` is smallest at

    .. math::  a_i^* = \frac{\mathbb{E}[f\, s_i^2]}{\mathbb{E}[s_i^2]} .

    Plugging in an estimate that uses sample :math:`k` itself would correlate :math:`a_i` with
    :math:`s_{k,i}` and bias the gradient. Here each sample gets a leave-one-out coefficient built
    from the others,

    .. math::  a_i^{(-k)} = \frac{\sum_{j\neq k} f_j s_{j,i}^2}{\sum_{j\neq k} s_{j,i}^2},

    independent of :math:`x_k`, so :math:`\frac1N\sum_k (f_k - a^{(-k)}) \odot s_k` stays unbiased.
    Every element of the cost is treated as one independent sample. The per-sample scores are taken
    with one vectorised backward per sample (``is_grads_batched``), so keep it to small models.
    Only first-order gradients are estimated, and the score part flows only into ``params``.

    Args:
        params: the tensors whose gradient is estimated (e.g. ``[theta]`` or
            ``model.parameters()``).
    """

    def __init__(self, params: Iterable[Tensor], eps: float = 1e-12) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("params: OptimalScale needs at least one tensor with requires_grad")
        self.eps = eps

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> Tensor:
        raise TypeError("OptimalScale is per-parameter: use it through lt.surrogate/lt.expectation")

    def terms(self, cost: Tensor, log_prob: Tensor) -> Tensor:
        """Per-sample terms of value 0 whose gradient is the score part of the estimator."""
        flat_lp = log_prob.reshape(-1)
        n = flat_lp.numel()
        eye = torch.eye(n, dtype=flat_lp.dtype, device=flat_lp.device)
        scores = torch.autograd.grad(
            flat_lp, self.params, grad_outputs=eye, is_grads_batched=True,
            retain_graph=True, allow_unused=True, materialize_grads=True,
        )  # fmt: skip
        c = cost.detach().reshape(-1)
        out = torch.zeros_like(flat_lp)
        for p, s in zip(self.params, scores):
            s = s.reshape(n, -1)
            s2 = s.pow(2)
            num = (c[:, None] * s2).sum(0, keepdim=True) - c[:, None] * s2
            den = s2.sum(0, keepdim=True) - s2
            a = num / den.clamp_min(self.eps)
            coef = ((c[:, None] - a) * s).detach()  # (n, numel(p)): per-sample gradient
            out = out + coef @ p.reshape(-1)
        out = out - out.detach()
        return out.reshape(log_prob.shape)


_NAMES = {"none": NoBaseline, "moving_average": MovingAverage, "leave_one_out": LeaveOneOut}


def resolve_baseline(spec: object) -> object:
    """Turn a short name, a number, a tensor or a baseline object into a baseline object."""
    if spec is None:
        return NoBaseline()
    if isinstance(spec, bool):
        raise TypeError(f"baseline: expected None, a number, a name or a baseline, got {spec!r}")
    if isinstance(spec, (int, float, Tensor)):
        return Constant(spec)
    if isinstance(spec, str):
        if spec not in _NAMES:
            raise ValueError(f"baseline: unknown name {spec!r}; expected one of {sorted(_NAMES)}")
        return _NAMES[spec]()
    if callable(spec):
        return spec
    raise TypeError(f"baseline: expected None, a number, a name or a baseline, got {spec!r}")
