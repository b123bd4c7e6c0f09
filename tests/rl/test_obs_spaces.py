"""Dict, Tuple and discrete observation spaces: flattened like Gymnasium's ``flatten`` (one-hot
discrete leaves), normalised per Box leaf, saved with the policy; clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import registered  # noqa: F401  (registers the test environments)
import torch
from gymnasium import spaces
from gymnasium.spaces.utils import flatdim, flatten
from gymnasium.vector.utils import concatenate, create_empty_array

from logtrick import rl
from logtrick.rl.errors import UnsupportedSpaceError
from logtrick.rl.policies import ActorCritic
from logtrick.rl.spaces import ObsLayout

NESTED = spaces.Dict({
    "pos": spaces.Box(-5.0, 5.0, (2, 3), np.float32),
    "inner": spaces.Tuple((spaces.Discrete(4, start=2), spaces.MultiBinary(3),
                           spaces.Dict({"md": spaces.MultiDiscrete([2, 3])}))),
    "flag": spaces.Discrete(2),
})  # fmt: skip


def _config(env: str, tmp_path: Path, **overrides: object) -> rl.Config:
    fields = {"env": env, "algo": "ppo", "num_envs": 4, "num_steps": 32, "total_steps": 4 * 32 * 3,
              "eval_every": 0, "progress": False, "plot": False, "tensorboard": False,
              "out": str(tmp_path), **overrides}  # fmt: skip
    return rl.Config(**fields)


@pytest.mark.parametrize("seed", [0, 1])
def test_nested_observations_flatten_like_gymnasium(seed: int) -> None:
    """One observation and a batch of them (as a vector env stacks them) give Gymnasium's
    ``flatten`` of each, in order; only the Box leaf is marked for normalisation."""
    NESTED.seed(seed)
    samples = [NESTED.sample() for _ in range(5)]
    layout = ObsLayout(NESTED)
    want = np.stack([flatten(NESTED, s) for s in samples]).astype(np.float32)
    assert layout.shape == (want.shape[1],)
    np.testing.assert_array_equal(layout.flatten(samples[0]), want[0])
    batch = concatenate(NESTED, samples, create_empty_array(NESTED, len(samples)))
    np.testing.assert_array_equal(layout.flatten(batch), want)
    widths = {k: flatdim(NESTED[k]) for k in NESTED}  # pos is the one Box leaf
    box = np.concatenate([np.full(w, k == "pos") for k, w in widths.items()])
    np.testing.assert_array_equal(layout.normalized, box)


def test_normalisation_applies_to_box_leaves_only_and_is_saved() -> None:
    space = spaces.Dict({"x": spaces.Box(-100.0, 100.0, (2,), np.float32),
                         "k": spaces.Discrete(3)})  # fmt: skip
    layout = ObsLayout(space)
    policy = ActorCritic(space, spaces.Discrete(2), normalize_obs=True)
    g = np.random.default_rng(0)
    obs = {"x": (50.0 + 10.0 * g.standard_normal((256, 2))).astype(np.float32),
           "k": g.integers(0, 3, 256)}  # fmt: skip
    features = torch.from_numpy(layout.flatten(obs))
    policy.update_obs_stats(features)
    seen = policy._features(features)
    box, onehot = layout.normalized, ~layout.normalized
    torch.testing.assert_close(seen[:, onehot], features[:, onehot])  # one-hot: unchanged
    assert abs(float(seen[:, box].mean())) < 0.05 and abs(float(seen[:, box].std()) - 1) < 0.05
    fresh = ActorCritic(space, spaces.Discrete(2), normalize_obs=True)
    fresh.load_state_dict(policy.state_dict())
    torch.testing.assert_close(fresh._features(features), seen)
    np.testing.assert_array_equal(
        policy.act(obs, deterministic=True), fresh.act(obs, deterministic=True)
    )


@pytest.mark.parametrize(
    ("space", "path"),
    [
        (spaces.Text(5), "observation_space"),
        (spaces.Dict({"a": spaces.Box(0, 1, (2,)), "b": spaces.Text(5)}), "observation_space['b']"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Sequence(spaces.Discrete(2)))),
         "observation_space[1]"),
        (spaces.Graph(spaces.Box(0, 1, (2,)), None), "observation_space"),
    ],
)  # fmt: skip
def test_unflattenable_observation_leaves_are_named(space: spaces.Space, path: str) -> None:
    with pytest.raises(UnsupportedSpaceError, match=r"Dict / Tuple") as err:
        ActorCritic(space, spaces.Discrete(2))
    assert str(err.value).startswith(path + ":"), err.value


@pytest.mark.parametrize(
    "action_space",
    [spaces.Dict({"a": spaces.Discrete(2)}), spaces.Tuple((spaces.Discrete(2),)), spaces.Text(3)],
)
def test_unsupported_action_spaces_say_what_is_supported(action_space: spaces.Space) -> None:
    with pytest.raises(UnsupportedSpaceError, match=r"action_space: .*expected Discrete"):
        ActorCritic(spaces.Box(0, 1, (2,)), action_space)


def test_blackjack_trains(tmp_path: Path) -> None:
    """Blackjack-v1: a Tuple of three Discrete observations (one-hot, 32 + 11 + 2 features)."""
    result = rl.train(_config("Blackjack-v1", tmp_path, normalize_obs=True))
    assert result.history[-1]["global_step"] >= 4 * 32 * 3
    assert all(np.isfinite(result.history[-1][k]) for k in ("policy_loss", "value_loss"))
    assert result.policy.obs_shape == (45,)
    mean, _ = rl.evaluate(result.policy, "Blackjack-v1", episodes=4)
    assert -1.0 <= mean <= 1.0


def test_a_dict_observation_policy_learns_its_goal(tmp_path: Path) -> None:
    """LogtrickGoal-v0 pays 1 per step whose action equals the Discrete ``goal`` leaf, beside a
    Box leaf of noise in ±100 and bits: a random policy earns 4 per 8-step episode, the learned
    one all 8 (deterministic evaluation, 20 episodes; 8.0 on seeds 0-5, about 1 s)."""
    config = _config("LogtrickGoal-v0", tmp_path, num_steps=64, total_steps=4 * 64 * 12,
                     normalize_obs=True, lr=3e-3, update_epochs=4, num_minibatches=4)  # fmt: skip
    result = rl.train(config)
    mean, _ = rl.evaluate(result.policy, "LogtrickGoal-v0", episodes=20)
    assert mean >= 7.5, mean
