"""EnvPool (``vector_env="envpool"``): the collector's transitions equal Gymnasium's on the same
env (CartPole-v1: EnvPool's dynamics are Gymnasium's; the initial states, drawn by another RNG,
are replayed into Gymnasium's env), through terminations, time-limit truncations and NEXT_STEP
autoresets; seeds as Gymnasium's; a training run."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from logtrick import rl
from logtrick.rl.envs import EnvPoolEnv, make_env
from logtrick.rl.rollout import Collector, Rollout

pytest.importorskip("envpool", reason="EnvPool is not installed (pip install 'logtrick[envpool]')")

QUIET = {"progress": False, "tensorboard": False, "plot": False}
LIMIT, B, T = 20, 4, 90


class FixedPolicy:
    """Deterministic: odd envs always push right (early terminations), even envs balance (the
    time limit truncates); V(s) = sum of s, so bootstrap values are compared too."""

    def update_obs_stats(self, obs: torch.Tensor) -> None:
        pass

    def step(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        balance = (obs[:, 2] + 0.5 * obs[:, 3] > 0).long()
        action = torch.where(torch.arange(len(obs)) % 2 == 1, 1, balance)
        return action, torch.zeros(len(obs)), self.value(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.double().sum(-1).float()

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return action.numpy()


class ReplayResets(gym.Wrapper):  # type: ignore[type-arg]
    """Gymnasium's CartPole starting each episode from the next of the given states."""

    def __init__(self, env: gym.Env, states: deque[np.ndarray]) -> None:
        super().__init__(env)
        self.states = states

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        state = self.states.popleft()
        self.env.unwrapped.state = state.astype(np.float64)  # type: ignore[attr-defined]
        return state.astype(np.float32), info


def _initial_states(ro: Rollout, next_obs: np.ndarray) -> list[deque[np.ndarray]]:
    """Each env's episode starts: row 0, and the observation after each NEXT_STEP reset row."""
    obs, valid = ro.obs.numpy(), ro.valid.numpy()
    starts: list[deque[np.ndarray]] = [deque([obs[0, b]]) for b in range(B)]
    for t, b in zip(*np.nonzero(~valid)):
        starts[b].append(obs[t + 1, b] if t + 1 < len(obs) else next_obs[b])
    return starts


@pytest.mark.parametrize("seed", [0, 3])
def test_envpool_transitions_equal_gymnasiums(seed: int) -> None:
    pool = EnvPoolEnv("CartPole-v1", B, max_episode_steps=LIMIT)
    got_collector = Collector(pool, FixedPolicy(), T, seed=seed)
    got = got_collector.collect()
    starts = _initial_states(got, got_collector._next_obs)
    pool.close()
    fns = [lambda b=b: ReplayResets(gym.make("CartPole-v1", max_episode_steps=LIMIT), starts[b])
           for b in range(B)]  # fmt: skip
    want = Collector(gym.vector.SyncVectorEnv(fns), FixedPolicy(), T, seed=seed).collect()
    assert got.terminated.any() and got.truncated.any() and not got.valid.all()
    for name in ("rewards", "terminated", "truncated", "valid", "bootstrap_index", "actions"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    torch.testing.assert_close(got.obs, want.obs, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.next_values, want.next_values, rtol=0, atol=1e-4)
    assert got.episode_lengths == want.episode_lengths
    assert got.episode_returns == want.episode_returns


def test_envpool_seeds_as_gymnasium_does() -> None:
    """reset(seed=s) gives env i seed s + i (a list: its own), and repeats exactly."""
    envs = make_env("CartPole-v1", 3, "envpool")
    first = envs.reset(seed=10)[0]
    again = envs.reset(seed=10)[0]
    shifted = envs.reset(seed=[11, 12, 13])[0]
    envs.close()
    assert np.array_equal(first, again) and np.array_equal(first[1:], shifted[:2])
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_envpool_refuses_what_it_cannot_make() -> None:
    with pytest.raises(ValueError, match="EnvPool id"):
        make_env("NoSuchEnv-v0", 2, "envpool")
    with pytest.raises(TypeError, match="id"):
        make_env(lambda: gym.make("CartPole-v1"), 2, "envpool")


def test_training_on_envpool_learns_cartpole(tmp_path: Path) -> None:
    result = rl.train(rl.Config(env="CartPole-v1", algo="ppo", total_steps=20_000, seed=0,
                                vector_env="envpool", eval_every=0, out=str(tmp_path),
                                **QUIET))  # fmt: skip
    assert result.history[-1]["episode_return"] > 100
