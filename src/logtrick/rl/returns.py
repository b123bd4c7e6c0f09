r"""Discounted returns and generalized advantage estimation: pure tensor functions.

All tensors are time-major, shape ``(T, B)``: ``T`` steps of ``B`` environments. ``terminated``
and ``truncated`` are separate flags. A terminated episode has no future (no bootstrap); a
truncated one (a time limit) is cut short and is bootstrapped with
:math:`\gamma V(s_\text{final})`, supplied through ``next_values``.

``next_values[t]`` is :math:`V(s_{t+1})` *of the same episode*: V(final observation) where the
episode was truncated at ``t``, V(next observation) at the last row when the episode continues
past the rollout, and V(obs[t+1]) otherwise. It is ignored where ``terminated[t]``. Pass
``next_values=0`` for no bootstrapping at all (plain REINFORCE on complete episodes).

Symbol / shape / description:

=================  =======  ==================================================
``rewards``        (T, B)   :math:`r_t`
``values``         (T, B)   :math:`V(s_t)`
``next_values``    (T, B)   :math:`V(s_{t+1})` of the same episode
``terminated``     (T, B)   bool, the episode ended in a terminal state at t
``truncated``      (T, B)   bool, the episode was cut (time limit) after t
=================  =======  ==================================================
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_gae", "discounted_returns"]


def _check_rate(name: str, x: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name}: expected a float in [0, 1], got {type(x).__name__}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1], got {x!r}")
    return float(x)


def _check_float(name: str, x: Tensor, shape: torch.Size | None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if shape is None and x.dim() != 2:
        raise ValueError(f"{name}: expected shape (T, B), got {tuple(x.shape)}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name}: expected shape {tuple(shape)} (T, B), got {tuple(x.shape)}")
    bad = ~x.isfinite()
    if bad.any():
        t, b = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}: {int(bad.sum())} entries are NaN or inf (first at t={t}, b={b})")
    return x


def _check_flag(name: str, x: Tensor, shape: torch.Size) -> Tensor:
    if not isinstance(x, Tensor) or x.dtype != torch.bool:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name}: expected a bool tensor of shape {tuple(shape)}, got {got}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {tuple(shape)} (T, B), got {tuple(x.shape)}")
    return x


def _check_inputs(
    rewards: Tensor,
    next_values: Tensor | float,
    terminated: Tensor,
    truncated: Tensor,
    values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Validate shapes, dtypes and finiteness; return ``(next_values, done)``."""
    shape = _check_float("rewards", rewards, None).shape
    if isinstance(next_values, (int, float)) and not isinstance(next_values, bool):
        next_values = torch.full_like(rewards, float(next_values))
    _check_float("next_values", next_values, shape)
    if values is not None:
        _check_float("values", values, shape)
    done = _check_flag("terminated", terminated, shape) | _check_flag("truncated", truncated, shape)
    return next_values.to(rewards.dtype), done


def discounted_returns(
    rewards: Tensor,
    next_values: Tensor | float,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
) -> Tensor:
    r"""Discounted reward-to-go, cut at episode ends, bootstrapped after truncation.

    .. math::  G_t = r_t + \gamma\,(1 - \text{term}_t)\,
               \begin{cases} V(s_{t+1}) & \text{done}_t \text{ or } t = T-1 \\
               G_{t+1} & \text{otherwise} \end{cases}

    with :math:`\text{done}_t = \text{term}_t \lor \text{trunc}_t` and
    :math:`V(s_{t+1})` = ``next_values[t]``.

    Args:
        rewards: ``(T, B)`` float rewards, finite.
        next_values: ``(T, B)`` :math:`V(s_{t+1})` of the same episode, or a number (``0`` for
            no bootstrap).
        terminated: ``(T, B)`` bool.
        truncated: ``(T, B)`` bool.
        gamma: discount in ``[0, 1]``.

    Returns:
        ``(T, B)`` returns, dtype of ``rewards``.

    References:
        Sutton & Barto, *Reinforcement Learning: An Introduction* (2nd ed., 2018), eq. 3.8.
    """
    gamma = _check_rate("gamma", gamma)
    next_values, done = _check_inputs(rewards, next_values, terminated, truncated)
    discount = gamma * (~terminated).to(rewards.dtype)  # no future after termination
    returns = torch.empty_like(rewards)
    following = next_values[-1]  # the last row always bootstraps
    for t in reversed(range(rewards.shape[0])):
        boot = torch.where(done[t], next_values[t], following)  # cut at episode ends
        returns[t] = rewards[t] + discount[t] * boot
        following = returns[t]
    return returns


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor | float,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    r"""Generalized advantage estimation, cut at episode ends, bootstrapped after truncation.

    .. math::
        \delta_t = r_t + \gamma\,(1 - \text{term}_t)\, V(s_{t+1}) - V(s_t), \qquad
        A_t = \delta_t + \gamma\lambda\,(1 - \text{done}_t)\, A_{t+1}, \qquad
        R_t = A_t + V(s_t)

    with :math:`A_T = 0`. :math:`\lambda = 1` gives Monte Carlo returns minus values
    (:math:`R_t` equals :func:`discounted_returns` when ``next_values[t] == values[t + 1]``
    inside episodes, as the collector produces them); :math:`\lambda = 0` gives the one-step
    TD error.

    Args:
        rewards: ``(T, B)`` float rewards, finite.
        values: ``(T, B)`` :math:`V(s_t)` at collection time.
        next_values: ``(T, B)`` :math:`V(s_{t+1})` of the same episode, or a number.
        terminated: ``(T, B)`` bool.
        truncated: ``(T, B)`` bool.
        gamma: discount in ``[0, 1]``.
        lam: GAE :math:`\lambda` in ``[0, 1]``.

    Returns:
        ``(advantages, returns)``, each ``(T, B)``; ``returns = advantages + values`` (the
        critic's regression target).

    References:
        Schulman et al., *High-Dimensional Continuous Control Using Generalized Advantage
        Estimation*, ICLR 2016, eq. 16.
    """
    gamma, lam = _check_rate("gamma", gamma), _check_rate("lam", lam)
    next_values, done = _check_inputs(rewards, next_values, terminated, truncated, values)
    values = values.to(rewards.dtype)
    nonterminal = (~terminated).to(rewards.dtype)
    deltas = rewards + gamma * nonterminal * next_values - values  # TD errors, all t at once
    carry = gamma * lam * (~done).to(rewards.dtype)  # the recursion stops at episode ends
    advantages = torch.empty_like(rewards)
    following = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        following = deltas[t] + carry[t] * following
        advantages[t] = following
    return advantages, advantages + values
