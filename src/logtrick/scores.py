r"""The seed's objects: the score function and the Fisher information.

For a distribution :math:`p(x;\theta)` the *score* is

.. math::  s(x;\theta) = \nabla_\theta \log p(x;\theta),

with :math:`\mathbb{E}_p[s] = 0` and :math:`\operatorname{Cov}_p[s] = F(\theta)`, the Fisher
information, wherever the support does not depend on :math:`\theta`. Both are computed per sample
with ``torch.func`` (``vmap`` over ``grad``): no Python loop over samples. A ``log_prob`` that
``vmap`` cannot run (``Geometric`` and ``Multinomial`` index with a boolean mask in place) gets
the same result from one backward pass through a copy of the parameters per sample, or, where
``dist_fn`` cannot take such copies, from a loop of ``torch.autograd.grad`` over the samples.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

from logtrick.checks import (
    check_distribution,
    check_finite,
    check_param_list,
    check_positive_int,
    check_tensor,
)

__all__ = ["call_dist_fn", "fisher", "flatten_scores", "score"]

DistFn = Callable[[list[Tensor]], Distribution]


def call_dist_fn(dist_fn: DistFn, params: list[Tensor]) -> Distribution:
    """``dist_fn(params)``, checked to be a distribution: the one place the functions taking a
    ``dist_fn`` (:func:`score`, :func:`fisher`, the diagnostics) call it first."""
    if not callable(dist_fn):
        raise TypeError(
            f"dist_fn: expected a function of the parameter list returning a distribution, got "
            f"{type(dist_fn).__name__}"
        )
    return check_distribution("dist_fn(params)", dist_fn(params))


# rl/npg.py imports this name; it is checks.check_param_list for "params"
_check_params = functools.partial(check_param_list, "params")


@contextlib.contextmanager
def _no_validation() -> Iterator[None]:
    """Turn off torch.distributions argument validation (data-dependent ``if`` breaks ``vmap``)."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def _looped_grads(dist_fn: DistFn, params: list[Tensor], flat: Tensor) -> list[Tensor]:
    """Per-sample gradients by a loop of ``torch.autograd.grad``, one backward pass per sample:
    slow, but needs nothing of ``log_prob`` beyond autograd (the reference and last resort)."""
    ps = [p.clone().requires_grad_(True) for p in params]
    with torch.enable_grad():
        dist = dist_fn(ps)
        rows = [torch.autograd.grad(dist.log_prob(xi).sum(), ps, retain_graph=True) for xi in flat]
    return [torch.stack([row[j] for row in rows]) for j in range(len(ps))]


def _copied_params_grads(
    dist_fn: DistFn, params: list[Tensor], flat: Tensor
) -> list[Tensor] | None:
    r"""Per-sample gradients from one backward pass: sample i gets its own copy
    :math:`\theta_i = \theta + 0` of the parameters (expanded to ``(N,) + θ.shape``), so that
    :math:`\partial_{\theta_i} \sum_j \log p(x_j;\theta_j) = s(x_i)`.

    Needs ``dist_fn`` to treat a leading parameter dimension as a batch dimension; ``None`` where
    it does not (an error, or log-probabilities, or the first and last samples' gradients, that
    differ from the plain evaluation).
    """
    n = flat.shape[0]
    copies = [
        torch.zeros((n, *p.shape), dtype=p.dtype, device=p.device, requires_grad=True)
        for p in params
    ]
    with torch.enable_grad():
        try:
            log_prob = dist_fn([p + c for p, c in zip(params, copies)]).log_prob(flat)
        except (RuntimeError, ValueError, IndexError, TypeError):
            return None
        reference = dist_fn(params).log_prob(flat)
        if log_prob.shape != reference.shape or not torch.allclose(log_prob, reference):
            return None
        grads = torch.autograd.grad(log_prob.sum(), copies)
    ends = _looped_grads(dist_fn, params, flat[[0, -1]])
    return list(grads) if all(torch.allclose(g[[0, -1]], e) for g, e in zip(grads, ends)) else None


def _per_sample_grads(dist_fn: DistFn, params: list[Tensor], flat: Tensor) -> list[Tensor]:
    """Gradients of ``log_prob(flat[i]).sum()`` in ``params``, one row per sample: ``vmap`` over
    ``grad`` where ``log_prob`` allows it, else one copy of the parameters per sample, else a
    loop over the samples."""

    def log_prob(ps: list[Tensor], xi: Tensor) -> Tensor:
        return dist_fn(ps).log_prob(xi).sum()

    with _no_validation():
        check_log_prob_differentiable(dist_fn, params, flat[0])
        try:
            with torch.enable_grad():
                vmapped = torch.func.vmap(torch.func.grad(log_prob), in_dims=(None, 0))
                return list(vmapped(params, flat))
        except RuntimeError:  # e.g. in-place indexing with a boolean mask (Geometric, Multinomial)
            grads = _copied_params_grads(dist_fn, params, flat)
            return grads if grads is not None else _looped_grads(dist_fn, params, flat)


def score(dist_fn: DistFn, params: Sequence[Tensor], x: Tensor) -> list[Tensor]:
    r"""Per-sample scores :math:`\nabla_\theta \log p(x_i;\theta)` for each parameter tensor.

    .. math::  s_i = \nabla_\theta \log p(x_i;\theta)

    ``x`` has shape ``sample_shape + batch_shape + event_shape`` of ``dist_fn(params)``; the
    log-density of one sample is summed over the batch dimensions (independent components), so
    each returned tensor has shape ``sample_shape + param.shape``.

    Works for every torch.distributions family whose ``log_prob`` is differentiable in the
    parameters: through ``vmap`` when ``log_prob`` allows it, else through per-sample copies
    of the parameters (``Geometric``, ``Multinomial``), else through a loop over the samples
    (slow; same values). :math:`\mathbb{E}[s] = 0`
    needs a support independent of :math:`\theta`: not so for ``Uniform``'s bounds or
    ``Pareto``'s scale, whose score is still the derivative of ``log_prob``.

    Args:
        dist_fn: maps the list ``params`` to a ``torch.distributions.Distribution``.
        params: parameter tensors (need not require grad); each must enter ``log_prob``
            differentiably (a ``ValueError`` names one that does not).
        x: samples in the support, shape ``sample_shape + batch_shape + event_shape``.

    Returns:
        One tensor per parameter, shape ``sample_shape + param.shape``; finite (a ``ValueError``
        otherwise, e.g. at a boundary of the support where the density is 0 or infinite).

    Example:
        >>> import torch, logtrick as lt
        >>> from torch.distributions import Normal
        >>> mu = torch.tensor(0.0)
        >>> s, = lt.score(lambda p: Normal(p[0], 1.0), [mu], torch.tensor([1.0, -2.0]))
        >>> s
        tensor([ 1., -2.])
    """
    params = [p.detach() for p in check_param_list("params", params)]
    x = check_tensor("x", x)
    with torch.no_grad():
        dist = call_dist_fn(dist_fn, params)
    tail = len(dist.batch_shape) + len(dist.event_shape)
    expected = tuple(dist.batch_shape + dist.event_shape)
    if x.dim() < tail or tuple(x.shape[x.dim() - tail :]) != expected:
        raise ValueError(
            f"x: expected shape sample_shape + {expected} (batch_shape + event_shape), "
            f"got {tuple(x.shape)}"
        )
    check_in_support("x", x, dist)
    sample_shape = x.shape[: x.dim() - tail]
    flat = x.reshape((-1, *expected))
    grads = _per_sample_grads(dist_fn, params, flat)
    for i, g in enumerate(grads):
        check_finite(f"score of params[{i}]", g)
    return [g.reshape(sample_shape + p.shape) for g, p in zip(grads, params)]


def flatten_scores(scores: Sequence[Tensor], sample_dims: int = 1) -> Tensor:
    """Concatenate per-parameter scores into one matrix ``(n_samples, n_params)``."""
    n = scores[0].shape[:sample_dims].numel()
    return torch.cat([s.reshape(n, -1) for s in scores], dim=1)


def fisher(
    dist_fn: DistFn,
    params: Sequence[Tensor],
    samples: int = 10_000,
    *,
    centered: bool = False,
) -> Tensor:
    r"""Empirical Fisher information :math:`F = \mathbb{E}_p[s s^\top]` over all parameters.

    .. math::  \hat F = \frac{1}{N} \sum_{i=1}^N s(x_i;\theta)\, s(x_i;\theta)^\top,
               \quad x_i \sim p(\cdot;\theta)

    Since :math:`\mathbb{E}[s] = 0`, the uncentred second moment is an unbiased estimate of
    :math:`\operatorname{Cov}[s] = F`; ``centered=True`` subtracts the sample mean instead (the
    sample covariance, also unbiased).

    Args:
        dist_fn: maps the list ``params`` to a distribution.
        params: parameter tensors; the result is over their elements, flattened and concatenated
            in order.
        samples: number of draws N (> 0; >= 2 with ``centered``). Seed with
            ``torch.manual_seed`` for reproducibility.
        centered: use the sample covariance instead of the second moment.

    Returns:
        ``(P, P)`` with ``P = sum(p.numel() for p in params)``.
    """
    check_positive_int("samples", samples, "the number of draws N")
    if centered and samples < 2:
        raise ValueError(
            f"samples: centered=True needs at least 2 draws (the sample covariance divides by "
            f"N - 1), got samples={samples}"
        )
    params = check_param_list("params", params)
    with torch.no_grad():
        x = call_dist_fn(dist_fn, [p.detach() for p in params]).sample((samples,))
    s = flatten_scores(score(dist_fn, params, x))
    if centered:
        s = s - s.mean(0)
        return s.T @ s / (samples - 1)
    return s.T @ s / samples


# ``lt.score(...)`` calls score() while ``logtrick.scores`` stays this module


def check_log_prob_differentiable(
    dist_fn: Callable[[list[Tensor]], Distribution], params: list[Tensor], x: Tensor
) -> None:
    """Every tensor of ``params`` reaches ``dist_fn(params).log_prob(x)`` through autograd (else
    its score is undefined, and ``torch.func.grad`` would silently return zeros)."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    with torch.enable_grad():
        dist = dist_fn(ps)
        log_prob = dist.log_prob(x).sum()
        try:
            grads = torch.autograd.grad(log_prob, ps, allow_unused=True)
        except RuntimeError as err:  # no graph at all, or an op without a derivative
            raise ValueError(
                f"dist_fn: {type(dist).__name__}.log_prob cannot be differentiated in params "
                f"({err}); every parameter must enter log_prob through differentiable operations"
            ) from err
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            raise ValueError(
                f"params[{i}] (shape {tuple(p.shape)}): {type(dist).__name__}.log_prob does not "
                f"depend on it differentiably (no autograd path: a .detach(), .item() or integer "
                f"cast in dist_fn?), so its score is undefined; drop it from params"
            )


def check_in_support(name: str, x: Tensor, dist: Distribution) -> Tensor:
    """Every value of ``x`` lies in ``dist``'s support (skipped where the user turned
    torch.distributions validation off, or the distribution declares no support)."""
    if not dist._validate_args:
        return x
    try:
        support = dist.support
        if support is None:
            return x
        inside = support.check(x)
    except NotImplementedError:
        return x
    if not bool(inside.all()):
        raise ValueError(
            f"{name}: {int((~inside).sum())} of {inside.numel()} values lie outside the support "
            f"{dist.support} of {type(dist).__name__}; expected samples of the distribution"
        )
    return x
