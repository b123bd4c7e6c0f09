r"""Sums over the ranks of a ``torch.distributed`` process group, for statistics that every rank
must share (the stateful baselines' averages, the learner's gradients and observation moments).

.. math::  \text{all\_reduce\_sum}(x)_r = \sum_{q \in \text{group}} x_q \quad \text{(every rank } r)

The one rule: with ``group=None`` or without an initialised default process group, nothing is
communicated and the tensors are returned unchanged, so single-process code pays nothing and needs
no ``torch.distributed`` setup.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["all_reduce_sum", "is_distributed", "pooled_moments", "world_size"]


def is_distributed(group: Any = None, *, default: bool = False) -> bool:
    """Whether a sum over ``group`` would communicate.

    Args:
        group: a process group, ``None``, or (with ``default=True``) ``None`` meaning the default
            group.
        default: treat ``group=None`` as the default group (the learner's use) instead of "no
            group" (the baselines' use).
    """
    if group is None and not default:
        return False
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def world_size(group: Any = None) -> int:
    """Number of ranks in ``group`` (the default group if ``None``); 1 when not distributed."""
    if not is_distributed(group, default=True):
        return 1
    return torch.distributed.get_world_size(group)


def all_reduce_sum(
    tensors: list[Tensor], group: Any = None, *, default: bool = False
) -> list[Tensor]:
    r"""The element-wise sums of ``tensors`` over the ranks of ``group``, in one collective.

    The tensors are flattened into one buffer (one message per call, not one per tensor), summed
    with ``all_reduce`` and split back; every rank must call it with tensors of the same shapes
    and dtypes, in the same order.

    Args:
        tensors: tensors of one dtype and device (any shapes); not modified.
        group: the process group (see :func:`is_distributed` for ``None``).
        default: ``group=None`` means the default group.

    Returns:
        New tensors, shaped like ``tensors``, holding the sums (the inputs themselves when
        nothing is communicated).
    """
    if not tensors or not is_distributed(group, default=default):
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat, group=group)
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def pooled_moments(
    x: Tensor, group: Any = None, *, default: bool = True
) -> tuple[float, Tensor, Tensor]:
    r"""Count, mean and population variance of the rows of ``x`` pooled over the ranks.

    .. math::  n = \sum_r n_r,\quad \mu = \frac1n \sum_r n_r \mu_r,\quad
               \sigma^2 = \frac1n \sum_r n_r \big(\sigma_r^2 + (\mu_r - \mu)^2\big)

    (Chan et al. 1979): every rank gets the moments of all ranks' rows, in two all-reduces. Not
    distributed: ``x``'s own moments, exactly as ``torch.var_mean`` gives them.

    Args:
        x: ``(N, ...)`` rows (``N`` may differ between ranks; the trailing shape may not).
    """
    var_r, mean_r = torch.var_mean(x, 0, correction=0)
    if not is_distributed(group, default=default):
        return float(len(x)), mean_r, var_r
    n_r = torch.full((1,), float(len(x)), dtype=x.dtype, device=x.device)
    mean_r, var_r = mean_r.nan_to_num(), var_r.nan_to_num()  # a rank with no rows adds nothing
    n, total = all_reduce_sum([n_r, n_r * mean_r], group, default=default)
    mean = total / n.clamp(min=1.0)
    (spread,) = all_reduce_sum([n_r * (var_r + (mean_r - mean) ** 2)], group, default=default)
    return float(n), mean, spread / n.clamp(min=1.0)
