"""Action masks: never a masked action (training, evaluation, ``act``), the masked distribution's
log-prob and entropy, zero gradient to masked logits, masks stored for the update."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import registered  # noqa: F401  (registers the test environments)
import torch
from gymnasium import spaces
from space_envs import MaskedEnv
from torch.distributions import Categorical

from logtrick import rl
from logtrick.rl.build import make_learner
from logtrick.rl.envs import make_env
from logtrick.rl.masks import info_action_mask
from logtrick.rl.policies import ActorCritic
from logtrick.rl.rollout import Collector
from logtrick.rl.update import update

ENVS = ["LogtrickMasked-v0", "LogtrickMaskedObs-v0", "LogtrickMaskedMulti-v0"]


def _config(env: str, tmp_path: Path, algo: str = "ppo", **overrides: object) -> rl.Config:
    fields = {"env": env, "algo": algo, "num_envs": 3, "num_steps": 16, "total_steps": 3 * 16 * 4,
              "eval_every": 0, "progress": False, "plot": False, "tensorboard": False,
              "out": str(tmp_path), **overrides}  # fmt: skip
    return rl.Config(**fields)


def _random_mask(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    mask = torch.rand(shape, generator=generator) < 0.5
    first = torch.randint(shape[-1], shape[:-1], generator=generator)
    return mask.scatter_(-1, first[..., None], True)  # at least one allowed per row


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("algo", ["ppo", "npg"])
def test_training_and_evaluation_never_take_a_masked_action(
    env: str, algo: str, tmp_path: Path
) -> None:
    """The env raises MaskViolationError on a masked action: training, stochastic and deterministic
    evaluation run through without one (thousands of masked choices, each about half masked)."""
    result = rl.train(_config(env, tmp_path, algo, normalize_obs=True))
    assert result.history[-1]["global_step"] >= 3 * 16 * 4
    for deterministic in (True, False):
        rl.evaluate(result.policy, env, episodes=4, deterministic=deterministic)


def test_taxi_never_takes_a_masked_action(tmp_path: Path) -> None:
    """Taxi's own ``info["action_mask"]`` (Gymnasium's convention; ``Discrete(500)`` observations
    are one-hot): training honours it, and so do ``act`` and evaluation."""
    result = rl.train(_config("Taxi-v4", tmp_path, num_envs=4, num_steps=32, total_steps=256))
    assert 0.5 < result.history[-1]["entropy"] < np.log(6) - 0.1  # ~ a few allowed actions
    env = gym.make("Taxi-v4")
    obs, info = env.reset(seed=0)
    for _ in range(500):
        action = result.policy.act(obs, False, info["action_mask"])
        assert info["action_mask"][action] == 1
        obs, _, terminated, truncated, info = env.step(int(action))
        if terminated or truncated:
            obs, info = env.reset()


@pytest.mark.parametrize("in_obs", [False, True])
@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_collector_stores_the_mask_each_action_was_sampled_with(mode: str, in_obs: bool) -> None:
    """Autoreset in both modes, masks in info or in a Dict observation (SAME_STEP's final
    observations flattened too): each stored mask allows its stored action, and re-evaluating
    the rollout under its masks gives the collected log-probs (PPO's ratio starts at 1)."""
    envs = make_env(lambda: MaskedEnv(in_obs=in_obs, length=3), num_envs=3, autoreset_mode=mode)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, policy, num_steps=20, seed=0)
    ro = collector.collect()
    assert ro.action_masks is not None and ro.action_masks.shape == (20, 3, 5)
    valid = ro.valid
    taken = ro.action_masks.gather(-1, ro.actions[..., None]).squeeze(-1)
    assert taken[valid].all()
    log_probs, _, _ = policy.evaluate_actions(ro.obs, ro.actions, ro.action_masks)
    torch.testing.assert_close(log_probs[valid], ro.log_probs[valid])
    unmasked, _, _ = policy.evaluate_actions(ro.obs, ro.actions)
    assert (unmasked[valid] < ro.log_probs[valid] - 1e-4).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_log_prob_and_entropy_are_the_renormalised_categorical(seed: int) -> None:
    """Discrete and MultiDiscrete (a flat mask of sum(nvec) entries): log-prob, entropy and the
    mode equal those of a Categorical on the allowed set (per component, summed)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(64, 4, generator=g)
    for nvec in ([5], [3, 4, 2]):
        space = spaces.Discrete(5) if len(nvec) == 1 else spaces.MultiDiscrete(nvec)
        torch.manual_seed(seed)
        policy = ActorCritic(spaces.Box(-1, 1, (4,)), space)
        torch.nn.init.normal_(policy.actor[-1].weight, std=1.0, generator=g)
        mask = torch.cat([_random_mask(g, (64, n)) for n in nvec], -1)
        logits = policy.actor(obs).split(nvec, -1)
        masks = mask.split(nvec, -1)
        refs = [Categorical(probs=(z.softmax(-1) * m) / (z.softmax(-1) * m).sum(-1, keepdim=True))
                for z, m in zip(logits, masks)]  # fmt: skip
        actions = torch.stack([r.sample() for r in refs], -1)
        actions = actions.squeeze(-1) if len(nvec) == 1 else actions
        dist = policy.distribution(obs, mask)
        per = actions[..., None] if len(nvec) == 1 else actions
        want = sum(r.log_prob(per[..., i]) for i, r in enumerate(refs))
        torch.testing.assert_close(dist.log_prob(actions), want)
        torch.testing.assert_close(dist.entropy(), sum(r.entropy() for r in refs))
        mode = policy.act(obs, deterministic=True, action_mask=mask.numpy())
        want_mode = torch.stack([r.probs.argmax(-1) for r in refs], -1)
        assert np.array_equal(mode.reshape(64, -1), want_mode.numpy())


def test_ppo_update_with_masks_is_finite_and_masked_logits_get_no_gradient(
    tmp_path: Path,
) -> None:
    """A real PPO update (entropy bonus on): every gradient reaching the actor's logits is finite
    and exactly 0 at masked entries, and the update's logged values are finite."""
    config = _config("LogtrickMasked-v0", tmp_path, ent_coef=0.01)
    envs = make_env(config.env, num_envs=config.num_envs)
    learner = make_learner(config, envs)
    grads: list[torch.Tensor] = []

    def keep_grad(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        if out.requires_grad:
            out.register_hook(grads.append)

    learner.policy.actor.register_forward_hook(keep_grad)
    masks: list[torch.Tensor] = []
    real_evaluate = learner.policy.evaluate_actions

    def evaluate(obs: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor) -> tuple:
        if torch.is_grad_enabled():  # not prepare()'s re-evaluation under new statistics
            masks.append(action_mask)
        return real_evaluate(obs, actions, action_mask)

    learner.policy.evaluate_actions = evaluate
    collector = Collector(envs, learner.policy, config.num_steps, seed=0)
    info = update(learner, collector.collect())
    assert all(np.isfinite(v) for v in info.values()), info
    assert len(grads) == len(masks) > 0
    for grad, mask in zip(grads, masks):
        assert torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()


def test_an_all_masked_step_is_an_error_naming_the_step() -> None:
    envs = make_env(lambda: MaskedEnv(length=100, all_masked_at=7), num_envs=2)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, policy, num_steps=10, seed=0)
    with pytest.raises(ValueError, match=r"action_mask at rollout step 7 .*allow no action"):
        collector.collect()
    with pytest.raises(ValueError, match="allow no action"):
        policy.act(np.zeros(5, np.float32), action_mask=np.zeros(5, bool))


def test_info_masks_batched_with_flags_and_tuples() -> None:
    """Rows of envs that gave no mask allow everything; a tuple of per-component masks (the
    MultiDiscrete form of ``MultiDiscrete.sample``) is concatenated."""
    info = {"action_mask": np.array([[1, 0, 0], [0, 0, 0]], np.int8),
            "_action_mask": np.array([True, False])}  # fmt: skip
    assert info_action_mask(info).tolist() == [[True, False, False], [True, True, True]]
    parts = (np.array([[1, 0]]), np.array([[0, 1, 1]]))
    assert info_action_mask({"action_mask": parts}).tolist() == [[True, False, False, True, True]]
