r"""Exact expectations over small finite supports: the reference every estimator is tested against.

.. math::  \mathbb{E}_{p(x;\theta)}[f(x)] = \sum_{x \in \mathcal X} p(x;\theta)\, f(x)

The sum is differentiable in the distribution's parameters (and in f's own parameters), so
``enumerate_expectation(f, dist).backward()`` gives the *exact* gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from logtrick.checks import check_distribution
from logtrick.costs import CostFn, evaluate_cost, joint_log_prob
from logtrick.independent import unwrap_independent

__all__ = ["enumerate_expectation"]


def _support(base: Distribution) -> Tensor:
    """The support as ``(S,) + event_shape`` (the same values for every batch element)."""
    if not base.has_enumerate_support:
        raise ValueError(
            f"dist: {type(base).__name__} has no finite support to enumerate; expected a "
            f"distribution with enumerate_support (Bernoulli, Categorical, OneHotCategorical, "
            f"Binomial), optionally inside Independent"
        )
    try:
        values = base.enumerate_support(expand=False)
    except NotImplementedError as err:
        raise ValueError(
            f"dist: {type(base).__name__}.enumerate_support failed ({err}); enumeration needs "
            f"the same support for every batch element"
        ) from err
    return values.reshape((values.shape[0], *base.event_shape))


def _product_samples(base: Distribution, reduced: int, max_configurations: int) -> Tensor:
    """All joint configurations of the last ``reduced`` batch dimensions, shared by the leading
    ones: a tensor ``(M,) + batch_shape + event_shape`` with ``M = S ** n``."""
    values = _support(base)
    batch = tuple(base.batch_shape)
    lead, trail = batch[: len(batch) - reduced], batch[len(batch) - reduced :]
    n, s = math.prod(trail), values.shape[0]
    m = s**n
    if m > max_configurations:
        raise ValueError(
            f"dist: enumerating the joint support of {n} components (batch dimensions {trail} "
            f"that f reduces) with {s} values each needs {s}^{n} = {m} configurations, more "
            f"than max_configurations={max_configurations}; use fewer components or a Monte "
            f"Carlo estimator"
        )
    digits = torch.arange(m, device=values.device)[:, None] // (
        s ** torch.arange(n - 1, -1, -1, device=values.device)
    )
    idx = digits % s  # (M, n): the support index of each component
    x = values[idx]  # (M, n) + event
    x = x.reshape((m, *(1,) * len(lead), *trail, *base.event_shape))
    return x.expand((m, *batch, *base.event_shape))


def enumerate_expectation(
    f: CostFn, dist: Distribution, max_configurations: int = 1 << 16
) -> Tensor:
    r"""Exact :math:`\mathbb{E}_{p}[f(x)]` by summing over the finite support, differentiably.

    .. math::  \mathbb{E}_p[f] = \sum_{m=1}^{M} \exp\Big(\sum_{i} \log p(x^{(m)}_i;\theta)\Big)
               \, f(x^{(m)})

    f follows the contract of :func:`logtrick.expectation`: it maps ``(N,) + batch_shape +
    event_shape`` to ``(N,) + batch_shape[:j]``. Batch dimensions that f keeps are independent
    problems and are enumerated side by side (``S`` configurations); batch dimensions that f
    reduces (and dimensions reinterpreted by ``Independent``) form one joint sample, whose
    Cartesian product of ``S ** n`` configurations is enumerated. f is called once on the
    configurations it must at least see (the ``S`` support points, or the product over the
    ``Independent`` dimensions) and, if it reduces more batch dimensions, once more on their
    product.

    Requires: a distribution with ``enumerate_support`` whose support is the same for every
    batch element (``Bernoulli``, ``Categorical``, ``OneHotCategorical``, ``Binomial`` with one
    ``total_count``), optionally wrapped in ``Independent``. f need not be differentiable in x.

    Args:
        f: cost function; may carry parameters of its own (they get their exact gradient too).
        dist: the distribution, with parameters that may require grad.
        max_configurations: refuse (``ValueError``) to enumerate more joint configurations.

    Returns:
        A tensor of shape ``batch_shape[:j]`` (the shape of f's output without its first
        dimension): the exact expectation, differentiable in the parameters.

    Example:
        >>> import torch
        >>> from torch.distributions import Bernoulli
        >>> theta = torch.zeros(3, requires_grad=True)
        >>> value = enumerate_expectation(lambda b: ((b - 0.499) ** 2).sum(-1), Bernoulli(logits=theta))
        >>> value.backward()   # theta.grad is the exact gradient
        >>> round(value.item(), 6)
        0.750003

    References:
        Mohamed et al. (2020), Monte Carlo Gradient Estimation in Machine Learning, JMLR, section
        2 (the expectation being estimated).
    """  # noqa: E501
    check_distribution("dist", dist)
    base, reinterpreted = unwrap_independent(dist)
    x = _product_samples(base, reinterpreted, max_configurations)
    cost = evaluate_cost(f, x, dist, x.shape[0])
    reduced = len(base.batch_shape) - (cost.dim() - 1)
    if reduced != reinterpreted:  # f reduces batch dimensions too: enumerate their product
        x = _product_samples(base, reduced, max_configurations)
        cost = evaluate_cost(f, x, dist, x.shape[0])
    return (joint_log_prob(dist, x, cost).exp() * cost).sum(0)
