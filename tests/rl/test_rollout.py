"""Collector and make_env: known-answer rollouts under both autoreset modes, errors, async."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from envs import CounterPolicy, counter, counter_vec

from logtrick.rl import ActorCritic, Collector, Rollout, compute_gae, discounted_returns, make_env

F, T_ = False, True
GAMMA = 0.5  # a power of two: every expected number below is exact in float32

# Two envs, 7 steps, V(s) = s, reward 1 per step.
#   env 0: terminates when the counter reaches 2 (no effective time limit);
#   env 1: never terminates, truncated after 3 steps.
SPECS = [(2, 1_000), (1_000, 3)]

# NEXT_STEP: the step after a done is the reset transition (obs = final obs, reward 0, invalid).
NEXT_STEP = {
    "obs": [[0, 1, 2, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1, 2]],
    "rewards": [[1, 1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 1, 1, 1]],
    "terminated": [[F, T_, F, F, T_, F, F], [F] * 7],
    "truncated": [[F] * 7, [F, F, T_, F, F, F, T_]],
    "valid": [[T_, T_, F, T_, T_, F, T_], [T_, T_, T_, F, T_, T_, T_]],
    # V(obs[t+1]); 0 where terminated; env 1 at t=6: V(final obs 3) of the truncated episode
    "next_values": [[1, 0, 0, 1, 0, 0, 1], [1, 2, 3, 0, 1, 2, 3]],
    # by hand, G_t = r_t + γ(1-term_t)[done_t ? V_{t+1} : G_{t+1}], γ = 1/2
    "returns": [[1.5, 1, 0.75, 1.5, 1, 0.75, 1.5], [2.125, 2.25, 2.5, 1.0625, 2.125, 2.25, 2.5]],
    "episode_returns": [2.0, 3.0, 2.0, 3.0],  # ends: t=1 env 0, t=2 env 1, t=4 env 0, t=6 env 1
    "episode_lengths": [2, 3, 2, 3],
}

# SAME_STEP: the obs returned at a done step is already the reset obs; final obs in info.
SAME_STEP = {
    "obs": [[0, 1, 0, 1, 0, 1, 0], [0, 1, 2, 0, 1, 2, 0]],
    "rewards": [[1] * 7, [1] * 7],
    "terminated": [[F, T_, F, T_, F, T_, F], [F] * 7],
    "truncated": [[F] * 7, [F, F, T_, F, F, T_, F]],
    "valid": [[T_] * 7, [T_] * 7],
    "next_values": [[1, 0, 1, 0, 1, 0, 1], [1, 2, 3, 1, 2, 3, 1]],
    "returns": [[1.5, 1, 1.5, 1, 1.5, 1, 1.5], [2.125, 2.25, 2.5, 2.125, 2.25, 2.5, 1.5]],
    "episode_returns": [2.0, 3.0, 2.0, 2.0, 3.0],  # t=1 env 0, t=2 env 1, t=3 env 0, t=5 both
    "episode_lengths": [2, 3, 2, 2, 3],
}


def _collect(mode: str, steps: int, calls: int = 1, asynchronous: bool = False) -> list[Rollout]:
    envs = counter_vec(SPECS, mode, asynchronous)
    try:
        collector = Collector(envs, CounterPolicy(), steps, seed=0)
        return [collector.collect() for _ in range(calls)]
    finally:
        envs.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("mode", "expected"), [("NextStep", NEXT_STEP), ("SameStep", SAME_STEP)])
def test_known_rollout(mode: str, expected: dict, asynchronous: bool) -> None:
    (ro,) = _collect(mode, 7, asynchronous=asynchronous)
    for name in ("rewards", "terminated", "truncated", "valid", "next_values"):
        want = torch.tensor(expected[name]).T.to(getattr(ro, name).dtype)
        assert torch.equal(getattr(ro, name), want), name
    obs = torch.tensor(expected["obs"], dtype=torch.float32).T
    assert torch.equal(ro.obs, obs[..., None])
    assert torch.equal(ro.values, obs)  # V(s) = s
    assert ro.episode_returns == expected["episode_returns"]
    assert ro.episode_lengths == expected["episode_lengths"]
    returns = discounted_returns(ro.rewards, ro.next_values, ro.terminated, ro.truncated, GAMMA)
    assert torch.equal(returns, torch.tensor(expected["returns"]).T)
    adv, ret = compute_gae(
        ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated, GAMMA, 1.0
    )
    assert torch.equal(ret, returns) and torch.equal(adv, returns - ro.values)


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_terminated_and_truncated_together_is_not_bootstrapped(mode: str) -> None:
    ro = Collector(counter_vec([(2, 2)], mode), CounterPolicy(), 2, seed=0).collect()
    assert ro.terminated[:, 0].tolist() == ro.truncated[:, 0].tolist() == [False, True]
    assert ro.next_values[:, 0].tolist() == [1.0, 0.0]
    returns = discounted_returns(ro.rewards, ro.next_values, ro.terminated, ro.truncated, GAMMA)
    assert returns[:, 0].tolist() == [1.5, 1.0]


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_consecutive_collects_continue(mode: str) -> None:
    (whole,) = _collect(mode, 8)
    parts = _collect(mode, 4, calls=2)
    for name in ("obs", "actions", "rewards", "terminated", "truncated", "valid", "next_values"):
        joined = torch.cat([getattr(p, name) for p in parts])
        assert torch.equal(joined, getattr(whole, name)), name
    assert parts[0].episode_returns + parts[1].episode_returns == whole.episode_returns
    assert parts[0].episode_lengths + parts[1].episode_lengths == whole.episode_lengths


def test_rollouts_are_copies() -> None:
    collector = Collector(counter_vec(SPECS, "NextStep"), CounterPolicy(), 3, seed=0)
    first = collector.collect()
    snapshot = {k: v.clone() for k, v in vars(first).items() if isinstance(v, torch.Tensor)}
    collector.collect()  # refills the buffers
    for name, value in snapshot.items():
        assert torch.equal(getattr(first, name), value), name


def test_torch_store_path_matches_numpy_path() -> None:
    # the branch used for non-CPU devices (torch indexing instead of numpy views), run on CPU
    def rollout(on_cpu: bool) -> Rollout:
        torch.manual_seed(0)
        envs = make_env("CartPole-v1", num_envs=2)
        policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
        collector = Collector(envs, policy, 30, seed=0)
        collector._on_cpu = on_cpu
        return collector.collect()

    fast, slow = rollout(True), rollout(False)
    for name in ("obs", "actions", "log_probs", "values", "rewards", "next_values", "valid"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name


def test_obs_stats_see_every_observation_once() -> None:
    policy = CounterPolicy()
    ro = Collector(counter_vec(SPECS, "NextStep"), policy, 5).collect()
    assert torch.equal(torch.stack(policy.stats_calls), ro.obs)
    envs = make_env("CartPole-v1", num_envs=3)
    normalised = ActorCritic(
        envs.single_observation_space, envs.single_action_space, normalize_obs=True
    )
    ro = Collector(envs, normalised, 20, seed=0).collect()
    assert float(normalised.obs_count) == 60
    torch.testing.assert_close(normalised.obs_mean, ro.obs.double().mean((0, 1)))


def test_actor_critic_rollout_matches_evaluate_actions() -> None:
    torch.manual_seed(0)
    envs = make_env("CartPole-v1", num_envs=3, seed=0)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
    ro = Collector(envs, policy, 40, seed=1).collect()
    assert ro.actions.shape == (40, 3) and ro.actions.dtype == torch.long
    log_prob, _, value = policy.evaluate_actions(ro.obs, ro.actions)
    torch.testing.assert_close(ro.log_probs, log_prob.detach())
    torch.testing.assert_close(ro.values, value.detach())
    assert ro.episode_returns and sum(ro.episode_lengths) <= int(ro.valid.sum())
    log_prob.sum().backward()  # rollout tensors are ordinary tensors, usable with autograd


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize("nan_in", ["reward", "obs"])
def test_nan_names_step_and_env(nan_in: str, mode: str) -> None:
    fns = [lambda: counter(), lambda: counter(limit=2), lambda: counter(nan_at=3, nan_in=nan_in)]
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode(mode))
    collector = Collector(envs, CounterPolicy(), 2)
    collector.collect()  # steps 0 and 1 are finite (and env 1's truncation is handled)
    what = "observation" if nan_in == "obs" else "reward"
    with pytest.raises(ValueError, match=rf"NaN or inf {what} at rollout step 0 .*env index 2"):
        collector.collect()


def test_autoreset_disabled_and_missing_are_refused() -> None:
    with pytest.raises(ValueError, match="DISABLED"):
        Collector(counter_vec(SPECS, "Disabled"), CounterPolicy(), 4)
    envs = counter_vec(SPECS, "NextStep")
    del envs.metadata["autoreset_mode"]
    with pytest.raises(ValueError, match="autoreset_mode"):
        Collector(envs, CounterPolicy(), 4)


def test_make_env_inputs() -> None:
    envs = make_env("CartPole-v1", num_envs=2, seed=3)
    assert envs.num_envs == 2 and make_env(envs) is envs
    same = make_env("CartPole-v1", num_envs=2, autoreset_mode="SameStep")
    assert same.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    single = make_env(counter())
    assert single.num_envs == 1
    assert make_env(lambda: counter(), num_envs=3).num_envs == 3
    with pytest.raises(ValueError, match="num_envs"):
        make_env(envs, num_envs=5)
    with pytest.raises(ValueError, match="factory"):
        make_env(counter(), num_envs=2)
    with pytest.raises(ValueError, match="vectorization_mode"):
        make_env("CartPole-v1", vectorization_mode="threads")
    with pytest.raises(TypeError, match="env"):
        make_env(42)


def test_unknown_env_id_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"CartPol-v1.*close matches: .*CartPole-v1"):
        make_env("CartPol-v1")


def test_make_env_seed_is_reproducible() -> None:
    def first_obs() -> np.ndarray:
        envs = make_env("CartPole-v1", num_envs=2, seed=7)
        return envs.step(envs.action_space.sample())[0]

    np.testing.assert_array_equal(first_obs(), first_obs())


def test_async_cartpole() -> None:
    envs = make_env("CartPole-v1", num_envs=2, vectorization_mode="async")
    try:
        policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
        ro = Collector(envs, policy, 50, seed=0).collect()
    finally:
        envs.close()
    assert ro.obs.shape == (50, 2, 4) and bool(ro.valid.any())
    assert ro.episode_returns, "CartPole episodes under a random policy end within 50 steps"


def test_whole_episodes_run_on_to_the_end_of_every_episode() -> None:
    """Rollouts of T = 4 over episodes of 3 (env 0) and 6 (env 1) steps, NEXT_STEP, γ = 1.

    At the 4th step env 0 is in its second episode (row 3 is its reset row) and env 1 in its
    first: the rollout runs on until both have ended (rows 6 and 5), marks what follows an end
    invalid and resets the envs, so every return is a whole episode's, the 6 of env 1 included
    (cut at the rollout boundary it would be [4, 3, 2, 1])."""
    envs = counter_vec([(3, 1_000), (6, 1_000)], "NextStep")
    collector = Collector(envs, CounterPolicy(), 4, seed=0, whole_episodes=True)
    ro = collector.collect()
    assert ro.rewards.shape == (7, 2)
    assert ro.valid.T.tolist() == [[T_, T_, T_, F, T_, T_, T_], [T_] * 6 + [F]]
    returns = discounted_returns(ro.rewards, ro.next_values, ro.terminated, ro.truncated, 1.0)
    assert returns[:, 0][ro.valid[:, 0]].tolist() == [3, 2, 1, 3, 2, 1]
    assert returns[:, 1][ro.valid[:, 1]].tolist() == [6, 5, 4, 3, 2, 1]
    assert ro.episode_returns == [3.0, 6.0, 3.0] and ro.episode_lengths == [3, 6, 3]
    again = collector.collect()  # fresh episodes after the reset
    assert again.obs[0, :, 0].tolist() == [0.0, 0.0] and again.valid[0].all()
    envs.close()


def test_whole_episodes_refuse_episodes_that_never_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("logtrick.rl.rollout.MAX_RUN_ON", 20)
    collector = Collector(counter_vec([(3, 1_000), (10**6, 10**6)], "NextStep"), CounterPolicy(),
                          4, whole_episodes=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"envs \[1\] did not end within 20 steps"):
        collector.collect()


class _BadObsEnv(gym.Env):
    """MultiBinary actions; step 3 returns a NaN observation (``bad="nan"``) or one of the
    wrong shape (``bad="shape"``)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def __init__(self, bad: str) -> None:
        self.bad, self.t = bad, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action: np.ndarray) -> tuple:
        self.t += 1
        obs = np.zeros(3, np.float32)
        if self.t == 3:
            obs = np.full(3, np.nan, np.float32) if self.bad == "nan" else np.zeros(4, np.float32)
        return obs, 1.0, False, self.t >= 10, {}


@pytest.mark.parametrize("bad", ["nan", "shape"])
def test_a_bad_observation_is_named_even_when_the_policy_fails_on_it_first(bad: str) -> None:
    """The finiteness check runs once per rollout, but a NaN observation can break the next
    ``policy.step`` first (a Bernoulli head raises torch's ``Expected p_in >= 0 && p_in <= 1``);
    an observation of the wrong shape broke gymnasium's vector env with numpy's "Output array is
    the wrong shape". Both now name the env, the step and what was wrong."""
    envs = gym.vector.SyncVectorEnv([lambda: _BadObsEnv(bad)] * 2)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, policy, 8, seed=0)
    match = {  # the observation returned by the third step, rollout step 2
        "nan": r"env: NaN or inf observation at rollout step 2 .*env index 0",
        "shape": r"env: step\(\) at rollout step 2 .* does not fit observation_space Box",
    }[bad]
    with pytest.raises(ValueError, match=match):
        collector.collect()
