"""Tiny deterministic environments and a dummy policy for the RL tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import TimeLimit
from torch import Tensor


class CounterEnv(gym.Env):
    """Observation = a counter s (starts at 0), +1 per step, reward 1; terminates at ``terminal``.

    ``nan_at``: on the step that reaches this counter value, the reward (``nan_in="reward"``) or
    the observation (``nan_in="obs"``) is NaN (for error tests).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self, terminal: int = 1_000, nan_at: int | None = None, nan_in: str = "reward"
    ) -> None:
        self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminal, self.nan_at, self.nan_in, self.s = terminal, nan_at, nan_in, 0

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.s = 0
        return np.array([self.s], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.s += 1
        bad = self.s == self.nan_at
        reward = float("nan") if bad and self.nan_in == "reward" else 1.0
        obs = np.array([np.nan if bad and self.nan_in == "obs" else self.s], dtype=np.float32)
        return obs, reward, self.s >= self.terminal, False, {}


def counter(
    terminal: int = 1_000, limit: int = 1_000, nan_at: int | None = None, nan_in: str = "reward"
) -> gym.Env:
    """A :class:`CounterEnv` with a time limit (truncation after ``limit`` steps)."""
    return TimeLimit(CounterEnv(terminal, nan_at, nan_in), max_episode_steps=limit)


def counter_vec(
    specs: list[tuple[int, int]], autoreset_mode: str, asynchronous: bool = False
) -> gym.vector.VectorEnv:
    """One counter env per ``(terminal, limit)`` pair, in a vector env with the given mode."""
    fns = [lambda term=term, lim=lim: counter(term, lim) for term, lim in specs]
    vec = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return vec(fns, autoreset_mode=gym.vector.AutoresetMode(autoreset_mode))


class CounterPolicy:
    """Deterministic policy: action 0, log-prob 0, value V(s) = s (the counter)."""

    def __init__(self) -> None:
        self.stats_calls: list[Tensor] = []

    def step(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch = obs.shape[:-1]
        return torch.zeros(batch, dtype=torch.long), torch.zeros(batch), self.value(obs)

    def value(self, obs: Tensor) -> Tensor:
        return obs[..., 0].clone()

    def to_env(self, action: Tensor) -> np.ndarray:
        return action.numpy()

    def update_obs_stats(self, obs: Tensor) -> None:
        self.stats_calls.append(obs.clone())
