"""Defaults of an env without a preset: which settings for which spaces, and that they learn."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from envs import counter

from logtrick import rl
from logtrick.rl import defaults
from logtrick.rl.defaults import EnvFacts, default_overrides, env_facts

QUIET = {"progress": False, "tensorboard": False, "plot": False}


def _facts(action_space: gym.spaces.Space, limit: int | None = 1_000) -> EnvFacts:
    obs = gym.spaces.Box(-np.inf, np.inf, shape=(5,), dtype=np.float32)
    return EnvFacts(obs, action_space, limit, None)


BOX = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
DISCRETE = gym.spaces.Discrete(3)


@pytest.mark.parametrize("space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_ppo_rule(space: gym.spaces.Space) -> None:
    """PPO gets the robust MuJoCo/SB3 defaults: normalised observations and rewards, 2,048
    transitions per update, 10 epochs of 32 minibatches, lr 3e-4 annealed, clip 0.2; the
    discount of a 1,000-step time limit."""
    values = default_overrides(_facts(space), "ppo")
    expected = {"normalize_obs": True, "normalize_rewards": True, "gamma": 0.995,
                "gae_lambda": 0.98, "lr": 3e-4, "anneal_lr": True, "update_epochs": 10,
                "num_minibatches": 32, "clip_eps": 0.2, "ent_coef": 0.0, "hidden": (64, 64),
                "activation": "tanh", "total_steps": 1_000_000}  # fmt: skip
    assert {k: values[k] for k in expected} == expected
    assert values["num_envs"] * values["num_steps"] == 2_048


@pytest.mark.parametrize("algo", rl.ALGOS)
def test_every_algo_gets_a_valid_config(algo: str) -> None:
    config = rl.Config(env="MountainCar-v0", algo=algo, **default_overrides(_facts(BOX), algo))
    assert config.normalize_obs and config.normalize_rewards
    if algo == "a2c":
        assert config.num_steps == 5 and config.num_minibatches == 1


@pytest.mark.parametrize(
    ("limit", "gamma", "lam"),
    [(1_000, 0.995, 0.98), (500, 0.995, 0.98), (200, 0.995, 0.98), (150, 0.993333, 0.98),
     (100, 0.99, 0.95), (50, 0.99, 0.95), (None, 0.99, 0.95)],
)  # fmt: skip
def test_the_discount_spans_the_time_limit(limit: int | None, gamma: float, lam: float) -> None:
    """γ = 1 − 1/T within [0.99, 0.995], λ = 0.98 above γ = 0.99. With γ = 0.99 everywhere
    (the old rule), LunarLanderContinuous-v3's PPO hovered instead of landing on 2 of 3 seeds in
    1M steps; with γ = 0.995 it lands (BENCHMARKS.md §5, round 3b). a2c keeps its n-step λ = 1."""
    for algo in rl.ALGOS:
        values = default_overrides(_facts(BOX, limit), algo)
        assert values["gamma"] == gamma, (algo, limit)
        assert values["gae_lambda"] == (1.0 if algo == "a2c" else lam), (algo, limit)


@pytest.mark.parametrize(
    ("limit", "expected"), [(1_000, 20_000), (500, 10_000), (50, 5_000), (None, 5_000)]
)
def test_eval_every_covers_one_evaluation(limit: int | None, expected: int) -> None:
    """Between two evaluations the trainer takes at least the env steps of one evaluation
    (20 episodes of up to ``max_episode_steps``), and never fewer than 5,000."""
    assert default_overrides(_facts(BOX, limit))["eval_every"] == expected


def test_env_facts_from_id_instance_factory_and_vector_env() -> None:
    from_id = env_facts("Pendulum-v1")
    assert isinstance(from_id.action_space, gym.spaces.Box)
    assert from_id.max_episode_steps == 200 and from_id.reward_threshold is None
    assert env_facts("CartPole-v1").reward_threshold == 475.0
    instance = gym.make("CartPole-v1")
    assert env_facts(instance).max_episode_steps == 500
    instance.close()
    from_factory = env_facts(lambda: counter(limit=30))
    assert isinstance(from_factory.action_space, gym.spaces.Discrete)
    vec = gym.make_vec("Acrobot-v1", num_envs=2)
    assert env_facts(vec).max_episode_steps == 500
    vec.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="algo"):
        default_overrides(_facts(BOX), "sac")
    with pytest.raises(TypeError, match="env"):
        env_facts(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="factory"):
        env_facts(lambda: "not an env")  # type: ignore[arg-type, return-value]


def test_preset_uses_the_rule_only_without_a_table_row() -> None:
    untuned = rl.preset("CartPole-v0", "ppo", seed=3)
    assert untuned.normalize_obs and untuned.num_minibatches == 32
    assert untuned.eval_every == defaults.eval_every(env_facts("CartPole-v0"))
    assert rl.preset("CartPole-v0", "ppo", num_minibatches=8).num_minibatches == 8
    tuned = rl.preset("CartPole-v1", "ppo")
    assert tuned.num_steps == rl.PRESETS["CartPole-v1"]["ppo"]["num_steps"]


@pytest.mark.slow
def test_untuned_continuous_control_learns(tmp_path: Path) -> None:
    """InvertedPendulum-v5 has no preset: its defaults lift the deterministic return from about
    5 (random) to over 80 in 10k steps (about 140 measured; the old generic defaults, 8 envs ×
    128 steps, 4 epochs, no normalisation, reached 33-39 on seeds 0-2)."""
    pytest.importorskip("mujoco")
    config = rl.preset("InvertedPendulum-v5", seed=0, total_steps=10_240, eval_every=0,
                       out=str(tmp_path), **QUIET)  # fmt: skip
    result = rl.train(config)
    mean, _ = rl.evaluate(result.policy, "InvertedPendulum-v5", episodes=20, seed=10_000)
    assert mean > 80.0, mean


def test_default_algorithm_per_env() -> None:
    """Without an algorithm, ``preset`` picks the env's fastest robust one (npg on CartPole-v1),
    else ppo."""
    assert rl.preset("CartPole-v1").algo == "npg"
    assert rl.preset("CartPole-v1").num_steps == rl.PRESETS["CartPole-v1"]["npg"]["num_steps"]
    assert rl.preset("Acrobot-v1").algo == "ppo"
    assert rl.preset("CartPole-v0").algo == "ppo"


def test_a_smaller_rollout_keeps_the_minibatch_size() -> None:
    """Shrinking the rollout of a preset or of the defaults (``--envs 2 --steps 8``) scales the
    number of minibatches with it, so the config stays valid; an explicit count is kept."""
    base = rl.preset("InvertedPendulum-v5", "ppo")
    size = base.num_envs * base.num_steps // base.num_minibatches
    small = rl.preset("InvertedPendulum-v5", "ppo", num_envs=2, num_steps=8)
    assert small.num_minibatches == max(1, round(16 / size))
    assert rl.preset("InvertedPendulum-v5", "ppo", num_steps=512).num_minibatches == 2 * (
        base.num_minibatches
    )
    assert (
        rl.preset("InvertedPendulum-v5", "ppo", num_steps=8, num_minibatches=4).num_minibatches == 4
    )


def test_every_run_is_on_policy_unless_overlap_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Overlap (policy lag 1) cost Hopper-v5 most of its return (BENCHMARKS.md §11), so no
    preset or default turns it on, for any algorithm, env or scale-out; a given value wins.
    The default algorithm under torchrun is therefore not refused for overlap."""
    from logtrick import rl

    for env in ("MountainCar-v0", "Pendulum-v1", "CartPole-v1", "Hopper-v5"):
        for algo in rl.ALGOS:
            assert rl.Config(env=env, algo=algo).overlap is False, (env, algo)
    assert rl.Config(env="MountainCar-v0", workers=2).overlap is False
    assert rl.Config(env="MountainCar-v0", overlap=True).overlap is True
    assert rl.Config(env="MountainCar-v0", algo="a2c", overlap=True).overlap is True
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rl.Config(env="MountainCar-v0").overlap is False
