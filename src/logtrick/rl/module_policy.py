r"""The user's own network as the trainer's policy: the interface it needs, checked up front.

A network passed as ``rl.Agent(env, policy=net)`` needs two methods (the two that
:class:`~logtrick.rl.policies.ActorCritic` has too):

===============================  ==========================================================
method                           returns
===============================  ==========================================================
``distribution(obs)``            a ``torch.distributions.Distribution`` :math:`\pi(\cdot\mid s)`
                                 over the env's raw actions, batch shape ``obs.shape[:1]``,
                                 event shape the action's (``()`` for ``Discrete``)
``value(obs)``                   :math:`V(s)`, shape ``obs.shape[:1]`` (zeros without a critic)
``actor_parameters()``           optional: the parameters of :math:`\pi` (needed by ``npg``,
                                 whose natural gradient steps only these; the optimizer steps
                                 all parameters)
===============================  ==========================================================

``obs`` is a float32 tensor ``(N, *observation_space.shape)`` of raw observations (normalise
inside the network: ``normalize_obs`` applies to the built-in policy only). :class:`ModulePolicy`
adds what the collector and the update need around the two methods (sampling, log-probabilities,
entropy, the env boundary), so the network stays a plain ``nn.Module``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from logtrick.rl.errors import UnsupportedSpaceError
from logtrick.rl.masks import mask_logits

__all__ = ["ModulePolicy", "check_policy_module"]


def check_policy_module(
    module: object, observation_space: spaces.Space, action_space: spaces.Space, algo: str = "ppo"
) -> None:
    """Check that ``module`` has the interface of the module docstring, by calling it on two
    sampled observations.

    Raises:
        TypeError: not an ``nn.Module``, a method missing, or a result of the wrong type.
        ValueError: a result of the wrong shape.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"policy: expected a torch.nn.Module, got {type(module).__name__}")
    needed = ["distribution", "value"] + (["actor_parameters"] if algo == "npg" else [])
    missing = [m for m in needed if not callable(getattr(module, m, None))]
    if missing:
        raise TypeError(
            f"policy: {type(module).__name__} has no method {', '.join(missing)}; a policy needs "
            "distribution(obs) -> torch.distributions.Distribution and value(obs) -> (N,) tensor"
            + (" (and actor_parameters() for npg)" if algo == "npg" else "")
        )
    obs = torch.as_tensor(
        np.stack([observation_space.sample() for _ in range(2)]), dtype=torch.float32
    )
    net: Any = module  # duck-typed: its distribution and value were checked just above
    with torch.no_grad():
        dist, value = net.distribution(obs), net.value(obs)
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"policy: distribution(obs) returned {type(dist).__name__}, expected a "
            "torch.distributions.Distribution"
        )
    shape = tuple(action_space.shape or ())
    if tuple(dist.batch_shape) != (2,) or tuple(dist.event_shape) != shape:
        raise ValueError(
            f"policy: distribution(obs) of obs {tuple(obs.shape)} has batch shape "
            f"{tuple(dist.batch_shape)} and event shape {tuple(dist.event_shape)}, expected (2,) "
            f"and the action's {shape} (use torch.distributions.Independent for vector actions)"
        )
    if not isinstance(value, Tensor) or tuple(value.shape) != (2,):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"policy: value(obs) of obs {tuple(obs.shape)} returned {got}, expected "
            "a tensor of shape (2,)"
        )


class ModulePolicy(nn.Module):
    """A user's network (``distribution`` and ``value``) with what the trainer needs around it:
    ``step``, ``evaluate_actions``, ``act``, ``to_env``, ``actor_parameters`` (see the module
    docstring).

    Args:
        module: the network; checked by :func:`check_policy_module`.
        observation_space: the env's (single) observation space.
        action_space: the env's (single) action space.
        config: the run's config (``algo``; ``normalize_obs`` must be False).
    """

    module: Any  # an nn.Module with distribution() and value(), checked by check_policy_module

    def __init__(
        self,
        module: nn.Module,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: Any,
    ) -> None:
        super().__init__()
        if config.normalize_obs:
            raise ValueError(
                "normalize_obs: True normalises the built-in policy's inputs only; with policy= "
                "normalise inside your network and set normalize_obs=False"
            )
        check_policy_module(module, observation_space, action_space, config.algo)
        self.module, self.action_space = module, action_space
        assert observation_space.shape is not None  # check_policy_module stacked its samples
        self.obs_shape = tuple(observation_space.shape)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> Distribution:
        """The network's distribution; with a mask (``Discrete`` actions and a ``Categorical``
        distribution only) the masked logits are :math:`-\\infty` (:func:`~.masks.mask_logits`)."""
        dist = self.module.distribution(obs)
        if action_mask is None:
            return dist
        if not isinstance(dist, Categorical):
            raise UnsupportedSpaceError(
                f"action_mask: policy= networks honour masks through a Categorical distribution, "
                f"got {type(dist).__name__}; return Categorical(logits=...) from distribution()"
            )
        return Categorical(logits=mask_logits(dist.logits, action_mask))

    def value(self, obs: Tensor) -> Tensor:
        return self.module.value(obs)

    def actor_parameters(self) -> list[nn.Parameter]:
        if hasattr(self.module, "actor_parameters"):
            return list(self.module.actor_parameters())
        return list(self.module.parameters())

    def update_obs_stats(self, obs: Tensor) -> None:
        """Nothing to update: the network normalises its inputs itself."""

    def step(self, obs: Tensor, action_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(action, log_prob, value)`` for the collector."""
        dist = self.distribution(obs, action_mask)
        action = dist.sample()
        return action, dist.log_prob(action), self.value(obs)

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, action_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_prob, entropy, value)`` of given actions; differentiable."""
        dist = self.distribution(obs, action_mask)
        return dist.log_prob(actions), dist.entropy(), self.value(obs)

    def to_env(self, action: Tensor) -> np.ndarray:
        """Env-ready numpy actions: ``Box`` clipped to its bounds, others cast to the space's
        dtype (``Discrete`` offset by its ``start``)."""
        a = action.detach().cpu().numpy()
        space = self.action_space
        if isinstance(space, spaces.Box):
            return np.clip(a, space.low, space.high).astype(space.dtype, copy=False)
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
            a = a + np.asarray(space.start) if np.any(np.asarray(space.start) != 0) else a
        return a.astype(space.dtype if space.dtype is not None else a.dtype, copy=False)

    def act(
        self, obs: np.ndarray | Tensor, deterministic: bool = False, action_mask: Any = None
    ) -> np.ndarray:
        """Env-ready actions for one observation or a batch (the mode when ``deterministic``;
        only actions ``action_mask`` allows)."""
        with torch.inference_mode():
            x = torch.as_tensor(obs, dtype=torch.float32)
            single = x.dim() == len(self.obs_shape)
            mask = None
            if action_mask is not None:
                mask = torch.as_tensor(np.asarray(action_mask, dtype=bool))
                mask = mask.reshape(-1, mask.shape[-1])
            batch = x.unsqueeze(0) if single else x.reshape(-1, *self.obs_shape)
            dist = self.distribution(batch, mask)
            action = dist.mode if deterministic else dist.sample()
            lead = tuple(x.shape[: x.dim() - len(self.obs_shape)])
            action = action.reshape(lead + tuple(action.shape[1:]))
            return self.to_env(action)
