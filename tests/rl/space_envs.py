"""Small environments for action masks and structured observation spaces (registered by
``registered.py``).

* :class:`MaskedEnv`: a fresh random mask each step (at least one action allowed per component),
  given in ``info["action_mask"]`` or as a ``Dict`` observation's ``"action_mask"`` key; a masked
  action raises :class:`MaskViolationError`, so a run that ever takes one fails. Reward 1 for the
  highest allowed action (of component 0), so a policy has something to learn.
* :class:`GoalEnv`: a ``Dict`` observation (a Discrete goal, nested Tuple of a wide-range Box of
  noise and bits); reward 1 when the action equals the goal; episodes of 8 steps.
* :class:`TextObsEnv`: a ``Text`` observation, which no policy can read.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class MaskViolationError(AssertionError):
    """The agent took an action its mask forbade."""


class MaskedEnv(gym.Env):
    """Random masks over ``Discrete(n)`` or ``MultiDiscrete(nvec)`` actions; episodes of
    ``length`` steps; ``all_masked_at``: the step whose mask allows nothing (an env bug)."""

    def __init__(
        self, nvec: tuple[int, ...] = (5,), in_obs: bool = False, length: int = 6,
        all_masked_at: int | None = None,
    ) -> None:  # fmt: skip
        self.nvec, self.in_obs, self.length = list(nvec), in_obs, length
        self.all_masked_at = all_masked_at
        self.action_space = (
            spaces.Discrete(nvec[0]) if len(nvec) == 1 else spaces.MultiDiscrete(list(nvec))
        )
        features = spaces.Box(-1.0, 1.0, (sum(nvec),), np.float32)
        mask_space = spaces.MultiBinary(sum(nvec))
        self.observation_space = (
            spaces.Dict({"obs": features, "action_mask": mask_space}) if in_obs else features
        )
        self.t, self.steps, self.mask = 0, 0, np.ones(sum(nvec), dtype=np.int8)

    def _new_mask(self) -> np.ndarray:
        parts = []
        for n in self.nvec:
            part = (self.np_random.random(n) < 0.5).astype(np.int8)
            part[self.np_random.integers(n)] = 1
            parts.append(part)
        mask = np.concatenate(parts)
        if self.all_masked_at is not None and self.steps == self.all_masked_at:
            mask[:] = 0
        return mask

    def _out(self) -> tuple[Any, dict[str, Any]]:
        self.mask = self._new_mask()
        features = (2.0 * self.mask - 1.0).astype(np.float32)  # the mask is observable
        if self.in_obs:
            return {"obs": features, "action_mask": self.mask}, {}
        return features, {"action_mask": self.mask}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.t = 0
        return self._out()

    def step(self, action: Any) -> tuple:
        a = np.atleast_1d(np.asarray(action))
        offsets = np.cumsum([0, *self.nvec[:-1]])
        if not self.mask[offsets + a].all():
            raise MaskViolationError(f"action {a.tolist()} with mask {self.mask.tolist()}")
        best = int(np.flatnonzero(self.mask[: self.nvec[0]]).max())
        reward = float(a[0] == best)
        self.t += 1
        self.steps += 1
        obs, info = self._out()
        return obs, reward, False, self.t >= self.length, info


class GoalEnv(gym.Env):
    """Dict observation ``{"goal": Discrete(2), "noise": Tuple(Box(±100, (2,)), MultiBinary(2))}``;
    reward 1 when the action is the goal; 8 steps per episode."""

    def __init__(self) -> None:
        noise = spaces.Tuple((spaces.Box(-100.0, 100.0, (2,), np.float32), spaces.MultiBinary(2)))
        self.observation_space = spaces.Dict({"goal": spaces.Discrete(2), "noise": noise})
        self.action_space = spaces.Discrete(2)
        self.t, self.goal = 0, 0

    def _obs(self) -> dict[str, Any]:
        self.goal = int(self.np_random.integers(2))
        noise = (100.0 * self.np_random.uniform(-1, 1, 2)).astype(np.float32)
        bits = self.np_random.integers(0, 2, 2).astype(np.int8)
        return {"goal": self.goal, "noise": (noise, bits)}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple:
        reward = float(int(action) == self.goal)
        self.t += 1
        return self._obs(), reward, False, self.t >= 8, {}


class TextObsEnv(gym.Env):
    """A ``Text`` observation space (not a fixed-size vector)."""

    observation_space = spaces.Text(8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        return "a", {}

    def step(self, action: Any) -> tuple:
        return "a", 0.0, True, False, {}
