"""The update step: even PPO minibatches, the epoch's KL, no mutation of the rollout, consistent
values under observation normalisation, one table of updates built on the core's surrogates."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import registered  # noqa: F401  (registers the test environments)
import torch

from logtrick import rl
from logtrick.rl import update as update_module
from logtrick.rl.build import make_learner
from logtrick.rl.envs import make_env
from logtrick.rl.rollout import Collector, Rollout
from logtrick.rl.update import update

QUIET = {"progress": False, "tensorboard": False, "plot": False}


def _learner_and_rollout(config: rl.Config, seed: int = 0) -> tuple:
    envs = make_env(config.env, num_envs=config.num_envs)
    learner = make_learner(config, envs)
    rollout = Collector(envs, learner.policy, config.num_steps, seed=seed).collect()
    envs.close()
    return learner, rollout


def _spy_minibatches(learner: object) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Record (obs, actions, log_prob) of every evaluate_actions call of the learner's policy."""
    calls: list = []
    policy = learner.policy
    original = policy.evaluate_actions

    def spy(obs: torch.Tensor, actions: torch.Tensor, action_mask: object = None) -> tuple:
        out = original(obs, actions, action_mask)
        calls.append((obs, actions, out[0].detach()))
        return out

    policy.evaluate_actions = spy
    return calls


def _keep(rollout: Rollout, n: int) -> Rollout:
    """The rollout with transitions spread over it marked invalid (as NEXT_STEP's reset rows
    are) until ``n`` valid ones remain."""
    valid = rollout.valid.clone()
    index = valid.view(-1).nonzero().squeeze(1)
    assert len(index) >= n
    drop = index[torch.linspace(0, len(index) - 1, len(index) - n).long()]
    valid.view(-1)[drop] = False
    return dataclasses.replace(rollout, valid=valid)


def test_ppo_splits_the_valid_samples_evenly() -> None:
    """245 valid samples in 4 minibatches: sizes 62, 61, 61, 61, never a leftover of 1."""
    config = rl.Config(algo="ppo", num_envs=4, num_steps=70, num_minibatches=4, update_epochs=2,
                       **QUIET)  # fmt: skip
    learner, rollout = _learner_and_rollout(config)
    rollout = _keep(rollout, 245)
    assert int(rollout.valid.sum()) == 245
    calls = _spy_minibatches(learner)
    update(learner, rollout)
    sizes = [len(obs) for obs, _, _ in calls]
    assert sizes == [62, 61, 61, 61] * 2, sizes


def test_target_kl_reads_the_epochs_mean_kl() -> None:
    """The logged approx_kl is the epoch's KL (the size-weighted mean over its minibatches,
    each measured before its step), and the epochs stop at the first whose KL passes
    target_kl."""
    config = rl.Config(algo="ppo", num_envs=4, num_steps=70, num_minibatches=4, update_epochs=10,
                       lr=3e-3, target_kl=0.002, **QUIET)  # fmt: skip
    learner, rollout = _learner_and_rollout(config)
    rollout = _keep(rollout, 245)
    before = copy.deepcopy(learner.policy)
    calls = _spy_minibatches(learner)
    info = update(learner, rollout)
    kls = []
    for obs, actions, log_prob in calls:
        with torch.no_grad():
            log_ratio = log_prob - before.evaluate_actions(obs, actions)[0]
        kls.append((float((log_ratio.exp() - 1 - log_ratio).sum()), len(obs)))
    epochs = [kls[i : i + 4] for i in range(0, len(kls), 4)]
    epoch_kl = [sum(k for k, _ in e) / sum(n for _, n in e) for e in epochs]
    assert info["epochs"] == len(epochs) < 10, epoch_kl
    assert all(kl <= config.target_kl for kl in epoch_kl[:-1]) and epoch_kl[-1] > config.target_kl
    assert info["approx_kl"] == pytest.approx(epoch_kl[-1], rel=1e-4)


@pytest.mark.parametrize("algo", rl.ALGOS)
def test_update_does_not_mutate_the_rollout(algo: str) -> None:
    config = rl.Config(algo=algo, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=2,
                       normalize_obs=True, normalize_rewards=True, **QUIET)  # fmt: skip
    learner, rollout = _learner_and_rollout(config)
    before = {k: v.clone() for k, v in vars(rollout).items() if isinstance(v, torch.Tensor)}
    update(learner, rollout)
    for name, value in before.items():
        assert torch.equal(getattr(rollout, name), value), name


def test_values_and_next_values_agree_under_observation_normalisation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counter env (obs = s = t, reward 1, no episode end in 5 steps), γ = λ = 1: the advantage
    the update uses is A_t = (5 − t) + V(s_5) − V(s_t), every V under the statistics of the end
    of the rollout (the ones the update's own forward passes use)."""
    config = rl.Config(env="LogtrickCounter-v0", algo="a2c", num_envs=1, num_steps=5,
                       num_minibatches=1, gamma=1.0, gae_lambda=1.0, normalize_obs=True,
                       normalize_rewards=False, normalize_advantages=False, **QUIET)  # fmt: skip
    learner, rollout = _learner_and_rollout(config)
    seen: dict = {}
    original = update_module.compute_gae

    def spy(*args: object, **kwargs: object) -> tuple:
        seen["out"] = original(*args, **kwargs)
        with torch.no_grad():  # V under the statistics the update uses, before any step
            seen["v"] = learner.policy.value(torch.arange(6.0)[:, None, None])[:, 0]
        return seen["out"]

    monkeypatch.setattr(update_module, "compute_gae", spy)
    update(learner, rollout)
    v = seen["v"].double()
    expected = torch.tensor([5.0 - t for t in range(5)], dtype=torch.float64) + v[5] - v[:5]
    torch.testing.assert_close(seen["out"][0][:, 0].double(), expected, rtol=1e-5, atol=1e-5)


def test_one_update_per_algorithm_in_one_table() -> None:
    assert set(update_module.UPDATES) == set(rl.ALGOS)
    assert all(callable(fn) for fn in update_module.UPDATES.values())
