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

from typing import cast

import torch
from torch import Tensor

from logtrick.checks import (
    check_bool_tensor,
    check_finite,
    check_floating,
    check_in_range,
    check_shape,
)

__all__ = ["compute_gae", "discounted_returns"]


def _as_tensor(next_values: Tensor | float, rewards: Tensor) -> Tensor:
    if isinstance(next_values, Tensor):
        return next_values.to(rewards.dtype)
    return torch.full_like(rewards, float(next_values))


def _inputs(
    rewards: Tensor,
    next_values: Tensor | float,
    terminated: Tensor,
    truncated: Tensor,
    values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Validate shapes, dtypes and finiteness; return ``(next_values, done)``."""
    rewards = check_floating("rewards", rewards)
    if rewards.dim() != 2:
        raise ValueError(f"rewards: expected shape (T, B), got {tuple(rewards.shape)}")
    if isinstance(next_values, (int, float)) and not isinstance(next_values, bool):
        next_values = _as_tensor(next_values, rewards)
    # a bool left here is refused by check_floating below
    next_t = cast(Tensor, next_values)
    tensors = {"rewards": rewards, "next_values": next_t}
    if values is not None:
        tensors["values"] = values
    for name, x in tensors.items():
        check_shape(name, check_floating(name, x), rewards.shape, "(T, B)")
        check_finite(name, x)
    terminated = check_bool_tensor("terminated", terminated, rewards.shape)
    done = terminated | check_bool_tensor("truncated", truncated, rewards.shape)
    return next_t.to(rewards.dtype), done


def discounted_returns(
    rewards: Tensor,
    next_values: Tensor | float,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    *,
    check: bool = True,
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
        check: validate the arguments (shapes, dtypes, finiteness: host syncs); the trainer
            passes ``False`` and checks its results once per update instead.

    Returns:
        ``(T, B)`` returns, dtype of ``rewards``.

    References:
        Sutton & Barto, *Reinforcement Learning: An Introduction* (2nd ed., 2018), eq. 3.8.
    """
    if check:
        gamma = check_in_range("gamma", gamma, 0.0, 1.0)
        next_values, done = _inputs(rewards, next_values, terminated, truncated)
    else:
        next_values, done = _as_tensor(next_values, rewards), terminated | truncated
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
    *,
    check: bool = True,
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
        check: validate the arguments (host syncs); ``False`` in the trainer.

    Returns:
        ``(advantages, returns)``, each ``(T, B)``; ``returns = advantages + values`` (the
        critic's regression target).

    References:
        Schulman et al., *High-Dimensional Continuous Control Using Generalized Advantage
        Estimation*, ICLR 2016, eq. 16.
    """
    if check:
        gamma, lam = check_in_range("gamma", gamma, 0.0, 1.0), check_in_range("lam", lam, 0.0, 1.0)
        next_values, done = _inputs(rewards, next_values, terminated, truncated, values)
    else:
        next_values, done = _as_tensor(next_values, rewards), terminated | truncated
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
