r"""The magic box of DiCE as autograd pieces: the box, the fused score term, the first-order guard.

The magic box :math:`\boxdot(\ell) = \exp(\ell - \bot(\ell))` (:math:`\bot`: stop-gradient) has
value 1 and derivative :math:`\boxdot(\ell)\,\nabla\ell`, so

.. math::  L = c\,\boxdot(\log p) + (1 - \boxdot(\log p))\, b,\qquad L = c,\qquad
           \nabla_\theta L = (c - b)\,\nabla_\theta\log p + \nabla_\theta c,

and every higher derivative of :math:`L` is an unbiased estimate of the same derivative of
:math:`\mathbb{E}[c]` (Foerster et al. 2018). :class:`ScoreTerm` computes the same :math:`L`
(optionally its mean over the sample dimension) as one autograd node: its first-order backward is
one multiplication; under ``create_graph=True`` it returns DiCE's derivatives as differentiable
expressions of :math:`c`, :math:`\log p` and the box, so that the next derivative is DiCE's too.
:func:`first_order_only` marks estimators whose terms are right for the first derivative only: a
second differentiation through them raises an error that names the estimator.

References:
    Foerster, Farquhar, Al-Shedivat, Rocktäschel, Xing & Whiteson (2018), DiCE: The Infinitely
    Differentiable Monte Carlo Estimator.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from logtrick.checks import transformed

__all__ = ["ScoreTerm", "first_order_only", "magic_box", "score_term"]


def magic_box(log_prob: Tensor) -> Tensor:
    r""":math:`\exp(\ell - \bot(\ell))`: value exactly 1, gradient :math:`\nabla \ell`."""
    return (log_prob - log_prob.detach()).exp()


class ScoreTerm(torch.autograd.Function):
    r"""Value :math:`c` (or its mean over dim 0); derivatives those of DiCE's
    :math:`c\,\boxdot(\ell) + (1 - \boxdot(\ell))\,b` with :math:`b` held constant.

    ``apply(cost, log_prob, b, reduce)``: ``b`` is a tensor that broadcasts to ``cost`` without
    enlarging it, a number, or ``None`` (zero); ``reduce=True`` returns ``cost.mean(0)``. The
    inputs are kept on ``ctx`` (not ``save_for_backward``, whose unpacking costs more than the
    whole first-order backward at small sizes): they are inputs, so no reference cycle forms, and
    their version counters are compared in the backward, so an in-place change in between still
    raises as it would for a saved tensor.
    """

    @staticmethod
    def forward(
        ctx: Any, cost: Tensor, log_prob: Tensor, b: Tensor | float | None, reduce: bool
    ) -> Tensor:
        ctx.inputs = (cost, log_prob, b)
        inference = cost.is_inference() or log_prob.is_inference()  # no backward, no counter
        ctx.versions = None if inference else (cost._version, log_prob._version)
        ctx.scale = 1.0 / cost.shape[0] if reduce else None
        return cost.mean(0) if reduce else cost.view_as(cost)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, None, None]:
        cost, log_prob, b = ctx.inputs
        if (cost._version, log_prob._version) != ctx.versions:
            raise RuntimeError(
                "ScoreTerm: the cost or the log-probability was modified in place after the "
                "surrogate was built; its gradient would be wrong (clone before modifying)"
            )
        if ctx.scale is not None:
            grad = grad * ctx.scale  # (B,): broadcasts over the sample dimension of cost
        residual = cost if b is None else cost - b
        if not torch.is_grad_enabled():  # first order: the plain estimator
            grad_cost = grad.expand_as(cost) if ctx.needs_input_grad[0] else None
            return grad_cost, grad * residual, None, None
        box = magic_box(log_prob)  # create_graph: DiCE's derivatives, differentiable again
        weighted = grad * box
        grad_cost = weighted if ctx.needs_input_grad[0] else None
        return grad_cost, weighted * residual, None, None


FUSED_MIN_NUMEL = 4096
"""From this many cost entries on, :func:`score_term` without a baseline is one fused node
(:class:`ScoreTerm`); below, the magic box's three small native nodes cost less than a Python
autograd node. With a baseline the fused node always wins (the native form needs six)."""


def score_term(
    cost: Tensor, log_prob: Tensor, b: Tensor | float | None = None, reduce: bool = False
) -> Tensor:
    r"""Value ``cost`` (``cost.mean(0)`` if ``reduce``), gradient
    :math:`(c - b)\nabla\log p + \nabla c` (averaged over dim 0 if ``reduce``), every higher
    derivative DiCE's; ``b`` enters as a constant (detach it before, if it carries a graph).

    Args:
        cost: ``(K, ...)`` costs, floating point.
        log_prob: log-probabilities of the samples, the shape of ``cost``.
        b: ``None`` (zero), a number, or a tensor broadcasting to ``cost`` without enlarging it.
        reduce: return the mean over dim 0 (one autograd node instead of two).

    Returns:
        ``cost`` as a new autograd node, or its mean over dim 0.
    """
    if b is not None or cost.numel() >= FUSED_MIN_NUMEL:  # b: one node instead of six
        if not transformed(cost):  # under vmap/grad a Function would need setup_context
            return ScoreTerm.apply(cost, log_prob, b, reduce)
        if b is not None:  # under vmap/grad: the native DiCE form (a Function would need more)
            box = magic_box(log_prob)
            out = cost * box + (1.0 - box) * b
            return out.mean(0) if reduce else out
    out = cost * (log_prob - log_prob.detach()).exp()  # the magic box, inline: the hot path
    if not reduce:
        return out
    return out.squeeze(0) if out.shape[0] == 1 else out.mean(0)  # one sample: a view, exact


class _RaiseOnBackward(torch.autograd.Function):
    """Identity on ``grad``, tied to ``anchor``; differentiating it raises ``message``."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor, anchor: Tensor, message: str) -> Tensor:
        ctx.message = message
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[None, None, None]:
        raise RuntimeError(ctx.message)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity whose backward, under ``create_graph=True``, returns a gradient that raises when
    differentiated again."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, message: str) -> Tensor:
        ctx.save_for_backward(x)
        ctx.message = message
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        if not torch.is_grad_enabled():
            return grad, None
        (x,) = ctx.saved_tensors
        return _RaiseOnBackward.apply(grad, x, ctx.message), None


def first_order_only(x: Tensor, who: str) -> Tensor:
    """``x`` unchanged, marked so that a second derivative through it raises an error naming
    ``who`` (an estimator or baseline whose terms estimate first derivatives only)."""
    message = (
        f"{who} estimates first derivatives only: its terms give no unbiased second or higher "
        f"derivative (torch.autograd.grad(..., create_graph=True) then a second grad). Use "
        f"estimator='score_function' (DiCE, any order), or a pathwise estimator for smooth f"
    )
    if transformed(x):  # under vmap/torch.func: no autograd.Function without setup_context
        return x
    return _FirstOrderOnly.apply(x, message)
