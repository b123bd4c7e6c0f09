"""ActorCritic: spaces, distributions, sampling, clipping, observation statistics, errors."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical

from logtrick.rl import ActorCritic, Config, make_env
from logtrick.rl.build import make_learner
from stats import assert_mean

OBS = spaces.Box(-5.0, 5.0, shape=(3,), dtype=np.float32)
ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "discrete_start": spaces.Discrete(3, start=-1),
    "multi_discrete": spaces.MultiDiscrete([2, 3, 4]),
    "multi_discrete_uniform": spaces.MultiDiscrete([3, 3], start=[1, 1]),
    "multi_binary": spaces.MultiBinary(4),
    "multi_binary_2d": spaces.MultiBinary([2, 3]),
    "box": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    "box_2d": spaces.Box(-2.0, 3.0, shape=(2, 2), dtype=np.float32),
}


def _policy(action_space: spaces.Space, seed: int = 0, **kwargs: object) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic(OBS, action_space, hidden=(16, 16), **kwargs)


def _obs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ACTION_SPACES)
def test_actions_lie_in_the_space_and_shapes(name: str) -> None:
    space = ACTION_SPACES[name]
    policy = _policy(space, log_std_init=1.0)
    obs = _obs(32)
    with torch.inference_mode():
        action, log_prob, value = policy.step(obs)
    assert action.shape == (32, *space.shape)
    assert log_prob.shape == (32,) and value.shape == (32,)
    env_actions = policy.to_env(action)
    assert all(space.contains(a) for a in env_actions), name
    for deterministic in (False, True):
        batch = policy.act(obs.numpy(), deterministic=deterministic)
        assert batch.shape == (32, *space.shape)
        assert all(space.contains(a) for a in batch)
        assert space.contains(policy.act(obs[0], deterministic=deterministic))
    log_prob2, entropy, value2 = policy.evaluate_actions(obs, action.clone())  # a normal tensor
    assert log_prob2.shape == entropy.shape == value2.shape == (32,)
    torch.testing.assert_close(log_prob2.detach(), log_prob)  # step agrees with the distribution
    torch.testing.assert_close(value2.detach(), value, rtol=1e-5, atol=1e-6)
    (log_prob2.sum() + entropy.sum() + value2.sum()).backward()
    assert policy.actor[0].weight.grad is not None


def _head(policy: ActorCritic, obs: torch.Tensor) -> torch.Tensor:
    return policy.actor(policy._features(obs)).detach()


def test_multi_discrete_is_a_product_of_categoricals() -> None:
    nvec = [2, 3, 4]
    policy = _policy(spaces.MultiDiscrete(nvec))
    for layer in (policy.actor[-1].weight, policy.actor[-1].bias):  # make the logits distinct
        torch.nn.init.normal_(layer)
    obs = _obs(16)
    head = _head(policy, obs)
    parts = [Categorical(logits=x) for x in head.split(nvec, dim=-1)]
    dist = policy.distribution(obs)
    entropy = sum(p.entropy() for p in parts)
    torch.testing.assert_close(dist.entropy(), entropy)
    actions = dist.sample()
    log_prob = sum(p.log_prob(actions[:, i]) for i, p in enumerate(parts))
    torch.testing.assert_close(dist.log_prob(actions), log_prob)
    for i, n in enumerate(nvec):  # padded slots are never drawn
        assert int(actions[:, i].max()) < n
    mode = policy.act(obs, deterministic=True)
    expected = np.stack([x.argmax(-1).numpy() for x in head.split(nvec, dim=-1)], -1)
    np.testing.assert_array_equal(mode, expected)


def test_discrete_sampler_matches_probabilities() -> None:
    # Fast-path (Gumbel-max) one-hot frequencies against softmax probabilities:
    # |mean - p| <= z σ̂/√N per category, family failure rate 1e-6, Bonferroni over 3.
    policy = _policy(spaces.Discrete(3))
    with torch.no_grad():
        policy.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    n = 60_000
    obs = _obs(1).expand(n, 3)
    with torch.inference_mode():
        actions, log_prob, _ = policy.step(obs)
    probs = policy.distribution(obs[:1]).probs[0].detach().double()
    assert_mean(torch.nn.functional.one_hot(actions, 3).double(), probs, alpha=1e-6, what="freq")
    torch.testing.assert_close(log_prob.exp().double(), probs[actions], rtol=1e-5, atol=0)


def test_box_clips_at_the_env_boundary_only() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    policy = _policy(space, log_std_init=2.0)  # std e² ≈ 7.4: most samples leave [-1, 1]
    obs = _obs(256)
    with torch.inference_mode():
        action, log_prob, _ = policy.step(obs)
    assert float(action.abs().max()) > 1.0
    dist = policy.distribution(obs)
    torch.testing.assert_close(log_prob, dist.log_prob(action).detach())  # unclipped sample
    env_action = policy.to_env(action)
    assert env_action.dtype == np.float32
    np.testing.assert_array_equal(env_action, np.clip(action.numpy(), -1.0, 1.0))
    mean = dist.base_dist.loc.detach().numpy()
    np.testing.assert_array_equal(policy.act(obs, deterministic=True), np.clip(mean, -1, 1))
    assert torch.equal(policy.log_std.detach(), torch.full((2,), 2.0))


def test_obs_normalisation_matches_numpy() -> None:
    policy = _policy(spaces.Discrete(2), normalize_obs=True)
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) * [1, 10, 0.1] for n in (1, 7, 50, 13)]
    for batch in batches:
        policy.update_obs_stats(torch.as_tensor(batch, dtype=torch.float32))
    data = np.concatenate(batches).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(policy.obs_mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(policy.obs_var.numpy(), data.var(0), rtol=1e-10)
    assert float(policy.obs_count) == len(data)
    x = torch.tensor([[3.0, 30.0, 0.3], [1e6, -1e6, 0.0]])
    feats = policy._features(x)
    mean, var = torch.from_numpy(data.mean(0)), torch.from_numpy(data.var(0))
    expected = (x.double() - mean) / (var + 1e-8).sqrt()
    torch.testing.assert_close(feats[0].double(), expected[0], rtol=1e-5, atol=1e-6)
    assert feats[1].tolist()[:2] == [10.0, -10.0]  # clipped to ±10
    clone = _policy(spaces.Discrete(2), seed=1, normalize_obs=True)
    clone.load_state_dict(policy.state_dict())  # statistics travel with the state_dict
    torch.testing.assert_close(clone._features(x), feats)
    torch.testing.assert_close(clone.value(x), policy.value(x))


def test_obs_stats_untouched_without_normalisation() -> None:
    policy = _policy(spaces.Discrete(2))
    policy.update_obs_stats(_obs(10) + 5)
    assert float(policy.obs_count) == 0.0
    x = _obs(4) * 100
    torch.testing.assert_close(policy._features(x), x)


def test_step_follows_parameter_updates() -> None:
    # step() evaluates a fused copy of actor and critic: it must follow optimizer steps,
    # load_state_dict and dtype/device moves.
    policy = _policy(spaces.Box(-1.0, 1.0, shape=(2,)))
    obs = _obs(8)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    for _ in range(2):
        with torch.inference_mode():
            _, _, value = policy.step(obs)
        torch.testing.assert_close(value, policy.value(obs).detach())
        optimizer.zero_grad()
        policy.evaluate_actions(obs, torch.zeros(8, 2))[2].sum().backward()
        optimizer.step()
    policy.load_state_dict(_policy(spaces.Box(-1.0, 1.0, shape=(2,)), seed=3).state_dict())
    with torch.inference_mode():
        _, _, value = policy.step(obs)
    torch.testing.assert_close(value, policy.value(obs).detach())
    policy.double()
    with torch.inference_mode():
        _, log_prob, value = policy.step(obs.double())
    assert value.dtype == log_prob.dtype == torch.float64


def test_orthogonal_initialisation() -> None:
    policy = _policy(spaces.Discrete(3))
    head, hidden = policy.actor[-1].weight.detach(), policy.actor[0].weight.detach()
    critic = policy.critic[-1].weight.detach()
    torch.testing.assert_close(head @ head.T, 1e-4 * torch.eye(3), rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden.T @ hidden, 2.0 * torch.eye(3), rtol=0, atol=1e-5)
    assert math.isclose(float(critic.norm()), 1.0, rel_tol=1e-5)
    assert all(not m.bias.any() for m in policy.actor if isinstance(m, torch.nn.Linear))


def test_without_critic_values_are_zero() -> None:
    policy = _policy(spaces.Discrete(2), critic=False)
    assert policy.critic is None
    with torch.inference_mode():
        _, _, value = policy.step(_obs(5))
    assert torch.equal(value, torch.zeros(5)) and torch.equal(policy.value(_obs(5)), value)


@pytest.mark.parametrize(
    ("obs_space", "action_space", "match"),
    [
        (spaces.Text(4), spaces.Discrete(2), "observation_space: Text"),
        (spaces.Dict({"a": spaces.Text(4)}), spaces.Discrete(2), r"observation_space\['a'\]: Text"),
        (
            spaces.Tuple([OBS, spaces.Sequence(OBS)]),
            spaces.Discrete(2),
            r"observation_space\[1\]: Sequence",
        ),
        (OBS, spaces.Text(5), "action_space: Text"),
        (OBS, spaces.Graph(OBS, None), "action_space: Graph"),
        (OBS, spaces.Tuple([spaces.Discrete(2)]), "action_space: Tuple"),
        (OBS, spaces.MultiDiscrete([[2, 3], [2, 2]]), "action_space: MultiDiscrete needs a 1-D"),
    ],
)
def test_unsupported_spaces(
    obs_space: spaces.Space, action_space: spaces.Space, match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        ActorCritic(obs_space, action_space)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="activation"):
        ActorCritic(OBS, spaces.Discrete(2), activation="sigmoidish")
    policy = _policy(spaces.Discrete(2), activation="relu")
    with pytest.raises(ValueError, match=r"obs: expected shape batch \+ \(3,\)"):
        policy.value(torch.zeros(4, 5))


def test_parameter_groups_and_copies() -> None:
    policy = _policy(spaces.Box(-1.0, 1.0, shape=(2,)), normalize_obs=True)
    actor, critic = policy.actor_parameters(), policy.critic_parameters()
    assert any(p is policy.log_std for p in actor)
    ids = {id(p) for p in actor} | {id(p) for p in critic}
    assert len(ids) == len(actor) + len(critic) == len(list(policy.parameters()))
    policy.update_obs_stats(_obs(20) * 3 + 1)
    buffer = io.BytesIO()
    torch.save(policy, buffer)  # the whole module pickles (no lambdas)
    twin = copy.deepcopy(policy)
    x = _obs(6)
    torch.testing.assert_close(twin.value(x), policy.value(x))
    with torch.inference_mode():
        assert torch.equal(twin.step(x)[2], policy.step(x)[2])


def test_step_follows_the_trainers_fused_optimizer() -> None:
    # The trainer's fused Adam writes in place without bumping version counters; Learner.step
    # bumps them, so the cached fused weights of step() must not go stale.
    envs = make_env("CartPole-v1", num_envs=1)
    learner = make_learner(Config(lr=0.1), envs)
    envs.close()
    policy, obs = learner.policy, torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        with torch.inference_mode():
            _, _, value = policy.step(obs)
        torch.testing.assert_close(value, policy.value(obs).detach())
        learner.step(policy.value(obs).square().mean())
