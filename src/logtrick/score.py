r"""The seed's objects: the score function and the Fisher information.

For a distribution :math:`p(x;\theta)` the *score* is

.. math::  s(x;\theta) = \nabla_\theta \log p(x;\theta),

with :math:`\mathbb{E}_p[s] = 0` and :math:`\operatorname{Cov}_p[s] = F(\theta)`, the Fisher
information. Both are computed per sample with ``torch.func`` (``vmap`` over ``grad``): no Python
loop over samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["fisher", "flatten_scores", "score"]

DistFn = Callable[[list[Tensor]], Distribution]


@contextlib.contextmanager
def _no_validation() -> Iterator[None]:
    """Turn off torch.distributions argument validation (data-dependent ``if`` breaks ``vmap``)."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def _check_params(params: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise TypeError("params: expected a list of tensors, got a single Tensor; wrap it: [theta]")
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}]: expected a Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"params[{i}]: expected a floating-point tensor, got dtype {p.dtype}")
    return params


def score(dist_fn: DistFn, params: Sequence[Tensor], x: Tensor) -> list[Tensor]:
    r"""Per-sample scores :math:`\nabla_\theta \log p(x_i;\theta)` for each parameter tensor.

    .. math::  s_i = \nabla_\theta \log p(x_i;\theta)

    ``x`` has shape ``sample_shape + batch_shape + event_shape`` of ``dist_fn(params)``; the
    log-density of one sample is summed over the batch dimensions (independent components), so
    each returned tensor has shape ``sample_shape + param.shape``.

    Args:
        dist_fn: maps the list ``params`` to a ``torch.distributions.Distribution``.
        params: parameter tensors (need not require grad).
        x: samples, shape ``sample_shape + batch_shape + event_shape``.

    Returns:
        One tensor per parameter, shape ``sample_shape + param.shape``.

    Example:
        >>> import torch, logtrick as lt
        >>> from torch.distributions import Normal
        >>> mu = torch.tensor(0.0)
        >>> s, = lt.score(lambda p: Normal(p[0], 1.0), [mu], torch.tensor([1.0, -2.0]))
        >>> s
        tensor([ 1., -2.])
    """
    params = [p.detach() for p in _check_params(params)]
    with torch.no_grad():
        dist = dist_fn(params)
    if not isinstance(dist, Distribution):
        raise TypeError(f"dist_fn: expected it to return a Distribution, got {type(dist).__name__}")
    tail = len(dist.batch_shape) + len(dist.event_shape)
    expected = tuple(dist.batch_shape + dist.event_shape)
    if x.dim() < tail or tuple(x.shape[x.dim() - tail :]) != expected:
        raise ValueError(
            f"x: expected shape sample_shape + {expected} (batch_shape + event_shape), "
            f"got {tuple(x.shape)}"
        )
    sample_shape = x.shape[: x.dim() - tail]
    flat = x.reshape((-1, *expected))

    def log_prob(ps: list[Tensor], xi: Tensor) -> Tensor:
        return dist_fn(ps).log_prob(xi).sum()

    with _no_validation(), torch.enable_grad():
        grads = torch.func.vmap(torch.func.grad(log_prob), in_dims=(None, 0))(params, flat)
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
        samples: number of draws N (> 0). Seed with ``torch.manual_seed`` for reproducibility.
        centered: use the sample covariance instead of the second moment.

    Returns:
        ``(P, P)`` with ``P = sum(p.numel() for p in params)``.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
        raise ValueError(f"samples: expected a positive int, got {samples!r}")
    params = _check_params(params)
    with torch.no_grad():
        x = dist_fn([p.detach() for p in params]).sample((samples,))
    s = flatten_scores(score(dist_fn, params, x))
    if centered:
        s = s - s.mean(0)
        return s.T @ s / (samples - 1)
    return s.T @ s / samples
