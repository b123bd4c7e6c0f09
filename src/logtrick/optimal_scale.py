r"""The per-parameter, variance-minimising baseline (a control-variate coefficient per parameter
element), estimated without bias by leaving one sample out.

Applied, like every baseline, through :func:`logtrick.baselines.score_terms`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from logtrick.collective import all_reduce_sum

__all__ = ["OptimalScale"]


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
    First derivatives only (a second derivative through it raises), and the score part flows
    only into ``params``.

    Data-parallel training (each rank draws its share of the samples, the parameters are
    replicated): with ``group`` the sums :math:`\sum_j f_j s_{j,i}^2` and
    :math:`\sum_j s_{j,i}^2` are all-reduced over the group before sample :math:`k`'s own term is
    left out, so each rank uses the leave-one-out coefficients of *all* ranks' samples, and the
    gradients averaged over equal-sized ranks are the single-process estimator on the
    concatenated samples. ``group=None``, or no initialised process group: nothing is
    communicated.

    Args:
        params: the tensors whose gradient is estimated (e.g. ``[theta]`` or
            ``model.parameters()``).
        eps: floor of the denominator.
        group: process group whose ranks share the statistics (``None``: this process alone).
    """

    active: ClassVar[bool] = True
    min_samples: ClassVar[int] = 2
    max_order: ClassVar[float] = 1
    uses_other_samples: ClassVar[bool] = True

    def __init__(self, params: Iterable[Tensor], eps: float = 1e-12, group: Any = None) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("params: OptimalScale needs at least one tensor with requires_grad")
        self.eps = eps
        self.group = group

    def __call__(self, cost: Tensor, sample_dim: int = 0, context: Tensor | None = None) -> None:
        raise TypeError("OptimalScale is per-parameter: use it through lt.surrogate/lt.expectation")

    def parts(
        self, cost: Tensor, log_prob: Tensor, sample_dim: int, context: Tensor | None
    ) -> tuple[None, Tensor]:
        return None, self.terms(cost, log_prob)

    def terms(self, cost: Tensor, log_prob: Tensor) -> Tensor:
        r"""Per-sample terms of value 0 whose gradient is :math:`-a^{(-k)} \odot s_k`, the
        per-parameter baseline's part of the estimator."""
        if log_prob.shape != cost.shape:
            raise ValueError(
                f"log_prob: OptimalScale needs one log-probability per cost element, got shape "
                f"{tuple(log_prob.shape)} for costs {tuple(cost.shape)}"
            )
        if not (torch.is_grad_enabled() and log_prob.requires_grad):  # no gradient to scale
            return torch.zeros_like(log_prob)
        flat_lp = log_prob.reshape(-1)
        n = flat_lp.numel()
        eye = torch.eye(n, dtype=flat_lp.dtype, device=flat_lp.device)
        scores = torch.autograd.grad(
            flat_lp,
            self.params,
            grad_outputs=eye,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
        )
        unused = [i for i, s in enumerate(scores) if s is None]
        if unused:
            shapes = [tuple(self.params[i].shape) for i in unused]
            raise ValueError(
                f"params: OptimalScale's params{unused} (shapes {shapes}) do not enter the "
                f"log-probability, so they have no score to scale; pass only the distribution's "
                f"parameters (or tensors it is computed from)"
            )
        c = cost.detach().reshape(-1, 1)
        flat = [s.detach().reshape(n, -1) for s in scores if s is not None]
        sums = [(c * s.pow(2)).sum(0, keepdim=True) for s in flat]  # sum_j f_j s_j^2
        sums += [s.pow(2).sum(0, keepdim=True) for s in flat]  # sum_j s_j^2
        sums = all_reduce_sum(sums, self.group)  # over every rank's samples
        out = torch.zeros_like(flat_lp)
        for p, s, num_all, den_all in zip(self.params, flat, sums[: len(flat)], sums[len(flat) :]):
            s2 = s.pow(2)
            num, den = num_all - c * s2, den_all - s2  # leave sample k out
            coef = -num / den.clamp_min(self.eps) * s  # (n, numel(p)): -a s per sample
            out = out + coef @ p.reshape(-1)
        out = out - out.detach()
        return out.reshape(log_prob.shape)
