"""Test environments registered with Gymnasium on import (for trainer and CLI tests by env id).

* ``LogtrickCounter-v0``: :class:`envs.CounterEnv` behind a time limit (kwargs ``terminal``,
  ``limit``); also reachable as ``registered:LogtrickCounter-v0`` (``gym.make`` imports the
  module) and, namespaced, as ``logtrick-test/Counter-v0``; ``LogtrickEpisode7-v0`` ends every
  episode after 7 steps.
* ``LogtrickRewardBomb-v0``: the counter with reward 1, except that every step from the
  ``bomb_at``-th step of the env's life on pays ``1e30`` (finite, but its square overflows
  float32): training on it diverges at a known update.
* ``LogtrickMasked-v0`` (masks in ``info``), ``LogtrickMaskedObs-v0`` (in a Dict observation),
  ``LogtrickMaskedMulti-v0`` (MultiDiscrete), ``LogtrickGoal-v0`` (Dict observation),
  ``LogtrickTextObs-v0`` (unsupported observation space): see :mod:`space_envs`.
"""

from __future__ import annotations

import gymnasium as gym
from envs import CounterEnv, counter
from gymnasium.wrappers import TimeLimit
from space_envs import GoalEnv, MaskedEnv, TextObsEnv


class RewardBomb(CounterEnv):
    """A counter env whose reward jumps to 1e30 from its ``bomb_at``-th step on."""

    def __init__(self, bomb_at: int = 40, terminal: int = 1_000) -> None:
        super().__init__(terminal=terminal)
        self.bomb_at, self.lifetime = bomb_at, 0

    def step(self, action: int) -> tuple:
        obs, reward, terminated, truncated, info = super().step(action)
        self.lifetime += 1
        return obs, 1e30 if self.lifetime >= self.bomb_at else reward, terminated, truncated, info


def _bomb(bomb_at: int = 40, terminal: int = 1_000) -> gym.Env:
    return TimeLimit(RewardBomb(bomb_at, terminal), max_episode_steps=1_000)


for _id, _entry, _kwargs in (
    ("LogtrickCounter-v0", counter, {}),
    ("logtrick-test/Counter-v0", counter, {}),
    ("LogtrickEpisode7-v0", counter, {"terminal": 7}),
    ("LogtrickRewardBomb-v0", _bomb, {}),
    ("LogtrickMasked-v0", MaskedEnv, {}),
    ("LogtrickMaskedObs-v0", MaskedEnv, {"in_obs": True}),
    ("LogtrickMaskedMulti-v0", MaskedEnv, {"nvec": (3, 4)}),
    ("LogtrickGoal-v0", GoalEnv, {}),
    ("LogtrickTextObs-v0", TextObsEnv, {}),
):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry, kwargs=_kwargs)
