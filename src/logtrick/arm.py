r"""Antithetic estimators for Bernoulli distributions: ARM and DisARM.

Both draw one uniform vector :math:`u` per pair and evaluate f at the two antithetic samples

.. math::  b = \mathbb 1[u < \sigma(\theta)],\qquad \tilde b = \mathbb 1[1 - u < \sigma(\theta)],

each marginally Bernoulli(:math:`\sigma(\theta)`) but negatively correlated. ``samples = K``
means K pairs, i.e. **2K evaluations of f**. Both are unbiased, need no derivative of f (a black
box is fine), and work with Bernoulli logits of any batch shape, also inside ``Independent``
(torch's vector form ``Independent(Bernoulli(logits), 1)``); f may reduce trailing batch
dimensions (the components of one multivariate sample) and maps samples to
``(K,) + dist.batch_shape[:j]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from logtrick.costs import CostFn, evaluate_cost
from logtrick.dice import first_order_only
from logtrick.independent import discrete_base

__all__ = ["ARM", "DisARM"]


def _pair(f: CostFn, dist: Distribution, samples: int, who: str) -> tuple[Tensor, ...]:
    """Logits θ, uniforms u, the antithetic samples b, b̃ and their costs f(b), f(b̃)."""
    base, _ = discrete_base(dist, who, ("bernoulli",))
    theta = base.logits
    eps = torch.finfo(theta.dtype).eps
    with torch.no_grad():
        u = torch.rand((samples, *theta.shape), dtype=theta.dtype, device=theta.device)
        u = u.clamp(eps, 1.0 - eps)
        p = torch.sigmoid(theta)
        b = (u < p).to(theta.dtype)
        b_anti = (1.0 - u < p).to(theta.dtype)
    cost = evaluate_cost(f, torch.cat([b, b_anti]), dist, 2 * samples)
    return theta, u, b, b_anti, cost[:samples], cost[samples:]


def _terms(value: Tensor, grad_logits: Tensor, theta: Tensor) -> Tensor:
    r"""Value ``value``; gradient ``grad_logits`` (``(K,) + batch_shape``, the per-pair estimate
    of :math:`\nabla_\theta`) chained into the logits' parameters."""
    inner = grad_logits.detach() * theta
    extra = inner.dim() - value.dim()
    if extra:
        inner = inner.sum(tuple(range(-extra, 0)))
    return value + (inner - inner.detach())


def _expand(diff: Tensor, like: Tensor) -> Tensor:
    """``f(b) - f(b̃)`` of shape ``(K,) + batch_shape[:j]`` broadcast to ``(K,) + batch_shape``."""
    return diff.reshape(diff.shape + (1,) * (like.dim() - diff.dim()))


@dataclass(frozen=True)
class ARM:
    r"""Augment-REINFORCE-merge: an antithetic estimator for Bernoulli logits.

    .. math::  \nabla_\theta \mathbb{E}[f(b)] \approx \frac1K \sum_k
               \big(f(\tilde b_k) - f(b_k)\big)\,(u_k - \tfrac12),\qquad u_k \sim U(0,1)^n

    with :math:`b = \mathbb 1[u < \sigma(\theta)]` and
    :math:`\tilde b = \mathbb 1[u > \sigma(-\theta)]`. Unbiased; f may be a black box; 2
    evaluations of f per pair (``samples`` = pairs). A baseline is refused (the antithetic pair
    is its own control variate). Value: exactly the mean of f over the 2K discrete samples.

    References:
        Yin & Zhou (2019), ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary Networks.
    """

    name: ClassVar[str] = "arm"
    unbiased: ClassVar[str] = "yes"
    requires: ClassVar[str] = "Bernoulli; f may be a black box (2 evaluations per pair)"
    max_order: ClassVar[float] = 1
    takes_baseline: ClassVar[bool] = False

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        theta, u, _, _, cost, cost_anti = _pair(f, dist, samples, "ARM")
        grad = _expand(cost_anti - cost, u).detach() * (u - 0.5)
        return first_order_only(_terms(0.5 * (cost + cost_anti), grad, theta), "ARM")


@dataclass(frozen=True)
class DisARM:
    r"""DisARM: ARM with the augmentation variable integrated out analytically.

    .. math::  \nabla_{\theta_i} \mathbb{E}[f(b)] \approx \frac1K \sum_k \tfrac12
               \big(f(b_k) - f(\tilde b_k)\big)\,(-1)^{\tilde b_{k,i}}\,
               \mathbb 1[b_{k,i} \neq \tilde b_{k,i}]\, \sigma(|\theta_i|)

    with the same antithetic pair as ARM. Unbiased, and its variance never exceeds ARM's
    (it is ARM conditioned on the pair, Rao-Blackwellised). f may be a black box; 2 evaluations
    of f per pair (``samples`` = pairs). A baseline is refused. Value: exactly the mean of f over
    the 2K discrete samples.

    References:
        Dong, Mnih & Tucker (2020), DisARM: An Antithetic Gradient Estimator for Binary Latent
        Variables.
    """

    name: ClassVar[str] = "disarm"
    unbiased: ClassVar[str] = "yes"
    requires: ClassVar[str] = "Bernoulli; f may be a black box (2 evaluations per pair)"
    max_order: ClassVar[float] = 1
    takes_baseline: ClassVar[bool] = False

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        theta, _, b, b_anti, cost, cost_anti = _pair(f, dist, samples, "DisARM")
        sign = 1.0 - 2.0 * b_anti  # (-1)^{b̃}
        weight = sign * (b != b_anti).to(b.dtype) * torch.sigmoid(theta.detach().abs())
        grad = 0.5 * _expand(cost - cost_anti, b).detach() * weight
        return first_order_only(_terms(0.5 * (cost + cost_anti), grad, theta), "DisARM")
