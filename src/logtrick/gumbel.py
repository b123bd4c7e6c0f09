r"""Continuous relaxations of Bernoulli and categorical samples, and the two biased estimators
that differentiate through them: ``GumbelSoftmax`` and ``StraightThrough``.

A Bernoulli or categorical sample is a hard threshold / argmax of perturbed logits,

.. math::  b = H(z),\quad z = \theta + \log u - \log(1 - u)\ \text{(Bernoulli)},\qquad
           b = \operatorname{onehot}\big(\arg\max_i (\theta_i + g_i)\big),\ g_i \sim
           \text{Gumbel}\ \text{(categorical)},

and replacing the hard threshold by a tempered sigmoid / softmax :math:`\sigma_\lambda(z)` gives
a *relaxed* sample that is differentiable in :math:`\theta`. The estimators here differentiate
through a relaxation and are **biased**; :mod:`logtrick.rebar` (REBAR, RELAX) uses the same
relaxation only as a control variate and is unbiased.

Conventions: for ``Bernoulli`` f receives ``(K,) + batch_shape`` tensors of 0/1 (or relaxed values
in (0, 1)); for ``Categorical`` and ``OneHotCategorical`` f receives **one-hot vectors**
``(K,) + batch_shape + (n,)`` (relaxed: points of the simplex), also for ``Categorical``, since an
index cannot be relaxed. Both estimators need f differentiable in its input.

``Independent(Bernoulli(logits), r)`` (torch's vector form; nested ``Independent`` too) and
``Independent(Categorical(...), r)`` are unwrapped (:mod:`logtrick.independent`): the samples are
those of the distribution inside, and f maps them to ``(K,) + dist.batch_shape[:j]``, the
*outer* batch shape (the reinterpreted dimensions are reduced by f). A masked category (logit
−inf) is never sampled and gets gradient 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, Distribution

from logtrick.checks import check_positive
from logtrick.costs import CostFn, evaluate_cost, require_gradient
from logtrick.independent import discrete_base, open_uniform

__all__ = ["GumbelSoftmax", "StraightThrough", "hard_sample", "perturbed_logits", "relax_sample"]


def perturbed_logits(dist: Distribution, samples: int) -> Tensor:
    r"""Reparameterised logits :math:`z` whose hard threshold / argmax is a sample of ``dist``.

    .. math::  z = \theta + \log u - \log(1-u)\ \text{(Bernoulli)},\qquad
               z_i = \theta_i - \log(-\log u_i)\ \text{(categorical)},\qquad u \sim U(0, 1)

    Returns:
        ``(K,) + batch_shape`` (Bernoulli) or ``(K,) + batch_shape + (n,)`` (categorical),
        differentiable in the distribution's logits.
    """
    base, kind = discrete_base(dist, "perturbed_logits")
    theta = base.logits
    u = open_uniform((samples, *theta.shape), theta)
    if kind == "bernoulli":
        return theta + u.log() - (-u).log1p()
    return theta - (-u.log()).log()


def relax_sample(z: Tensor, kind: str, temperature: Tensor | float) -> Tensor:
    r"""The relaxed sample :math:`\sigma_\lambda(z)`: ``sigmoid(z / λ)`` or ``softmax(z / λ)``.

    An infinite z (a masked category's logit, −inf) stays infinite and passes no gradient, also
    to a learnable temperature (``z / λ`` alone would give ``0 · ∞ = NaN`` there).
    """
    inf = z.isinf()
    scaled = torch.where(inf, z, z.masked_fill(inf, 0.0) / temperature)
    if kind == "bernoulli":
        return torch.sigmoid(scaled)
    return torch.softmax(scaled, dim=-1)


def hard_sample(z: Tensor, kind: str) -> Tensor:
    """The discrete sample :math:`H(z)`: ``z > 0`` (0/1) or the one-hot argmax, as floats."""
    if kind == "bernoulli":
        return (z > 0).to(z.dtype)
    return F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)


@dataclass(frozen=True)
class GumbelSoftmax:
    r"""Gumbel-softmax / Concrete relaxation: the pathwise gradient of a relaxed objective.

    .. math::  \nabla_\theta \mathbb{E}_p[f(b)] \approx \frac1K \sum_k
               \nabla_\theta f\big(\sigma_\tau(z_k(\theta))\big),\qquad
               \sigma_\tau(z) = \operatorname{sigmoid}(z/\tau)\ \text{or}\
               \operatorname{softmax}(z/\tau)

    It is the unbiased gradient of :math:`\mathbb{E}_z[f(\sigma_\tau(z))]`, **not** of
    :math:`\mathbb{E}[f(b)]`: biased, with the bias vanishing as :math:`\tau \to 0` while the
    variance grows like :math:`1/\tau`. With ``hard=True`` (straight-through Gumbel-softmax) f is
    evaluated at the discrete sample :math:`H(z)` and differentiated as if at
    :math:`\sigma_\tau(z)`.

    Requires: ``Bernoulli`` (binary Concrete), ``Categorical`` or ``OneHotCategorical``,
    optionally inside ``Independent``; f differentiable in its input and defined on relaxed
    values (see the module docstring for shapes: categorical f always takes one-hot vectors).
    A baseline is refused (no score term).

    Value: the mean of f at the relaxed samples (``hard=False``) or exactly the mean of f at the
    discrete samples (``hard=True``).

    Args:
        temperature: :math:`\tau > 0`.
        hard: evaluate f at the hard sample (straight-through on the relaxed sample).

    References:
        Maddison, Mnih & Teh (2017), The Concrete Distribution; Jang, Gu & Poole (2017),
        Categorical Reparameterization with Gumbel-Softmax.
    """

    temperature: float = 0.5
    hard: bool = False

    name: ClassVar[str] = "gumbel_softmax"
    unbiased: ClassVar[str] = "no (exact for the relaxed objective only)"
    requires: ClassVar[str] = "Bernoulli or categorical; f differentiable on relaxed inputs"
    max_order: ClassVar[float] = math.inf
    takes_baseline: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_positive("temperature", self.temperature)

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        _, kind = discrete_base(dist, "GumbelSoftmax")
        z = perturbed_logits(dist, samples)
        y = relax_sample(z, kind, self.temperature)
        if self.hard:
            y = hard_sample(z.detach(), kind) + (y - y.detach())
        return require_gradient(evaluate_cost(f, y, dist, samples), y, "GumbelSoftmax")


@dataclass(frozen=True)
class StraightThrough:
    r"""Straight-through estimator: f at the discrete sample, differentiated through the mean.

    .. math::  \nabla_\theta \mathbb{E}_p[f(b)] \approx \frac1K \sum_k
               \nabla_b f(b_k)\, \frac{\partial\, \mathbb{E}_p[b]}{\partial\theta},\qquad
               b_k \sim p

    The backward pass treats the sample as if it were its mean: ``b + p - p.detach()`` with
    :math:`p = \sigma(\theta)` (Bernoulli) or :math:`p = \operatorname{softmax}(\theta)`
    (categorical, one-hot b). This is the "identity through the mean" variant; the
    straight-through *Gumbel* variant is ``GumbelSoftmax(hard=True)``. Biased unless f is affine
    in each Bernoulli component separately (multilinear) or linear in the one-hot vector.

    Requires: ``Bernoulli``, ``Categorical`` or ``OneHotCategorical``, optionally inside
    ``Independent``; f differentiable in its input (categorical f takes one-hot vectors). A
    baseline is refused. Value: exactly the mean of f at the discrete samples.

    References:
        Bengio, Léonard & Courville (2013), Estimating or Propagating Gradients Through Stochastic
        Neurons for Conditional Computation.
    """

    name: ClassVar[str] = "straight_through"
    unbiased: ClassVar[str] = "no (unless f is multilinear in the Bernoulli components)"
    requires: ClassVar[str] = "Bernoulli or categorical; f differentiable in its input"
    max_order: ClassVar[float] = 1
    takes_baseline: ClassVar[bool] = False

    def terms(
        self, f: CostFn, dist: Distribution, samples: int, baseline: object, context: Tensor | None
    ) -> Tensor:
        base, kind = discrete_base(dist, "StraightThrough")
        with torch.no_grad():
            x = base.sample((samples,))
        if kind == "bernoulli":
            p = base.probs
        else:
            p = torch.softmax(base.logits, -1)
            if isinstance(base, Categorical):
                x = F.one_hot(x, p.shape[-1]).to(p.dtype)
        y = x + (p - p.detach())
        return require_gradient(evaluate_cost(f, y, dist, samples), y, "StraightThrough")
