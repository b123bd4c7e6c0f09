"""Overlapped collection: the stated lag exactly (rollout k is the one a plain collector gathers
with the weights of update k-1), truncation and observation statistics as without overlap, the
PPO ratio against the behaviour policy, and a resumable, reproducible run."""

from __future__ import annotations

import copy
import multiprocessing
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import pytest
import torch

from logtrick import rl
from logtrick.rl.envs import make_env
from logtrick.rl.overlap import OverlapCollector
from logtrick.rl.policies import build_policy
from logtrick.rl.rollout import Collector, Rollout

QUIET = {"progress": False, "tensorboard": False, "plot": False}
ENVS = {"CartPole-v1": False, "Pendulum-v1": True}  # env -> normalise observations


def _factory(env_id: str) -> object:
    return lambda: gym.make(env_id, max_episode_steps=13)  # truncations inside every rollout


def _fake_update(policy: torch.nn.Module, k: int) -> None:
    """A deterministic change of the weights standing in for update k."""
    with torch.no_grad():
        for i, p in enumerate(policy.parameters()):
            p.add_(0.05 * torch.cos(torch.arange(p.numel(), dtype=p.dtype) + k + i).view_as(p))


def _assert_same(a: Rollout, b: Rollout, k: int) -> None:
    for name in ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated",
                 "next_values", "valid", "bootstrap_obs", "bootstrap_index"):  # fmt: skip
        assert torch.equal(getattr(a, name), getattr(b, name)), f"rollout {k}: {name}"
    assert a.episode_returns == b.episode_returns and a.episode_lengths == b.episode_lengths


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize(("seed", "process"), [(0, True), (1, True), (0, False)])
def test_rollouts_are_a_plain_collectors_with_the_weights_one_update_back(
    env_id: str, seed: int, process: bool
) -> None:
    """Rollout 0 is the plain collector's (lag 0); rollout k >= 1 is the plain collector's with
    the weights after update k-1 (lag 1): same transitions, truncations, bootstrap values and
    episode statistics, and the learner ends with the plain path's observation statistics;
    whether the rollouts come from a forked child (the default here) or a thread."""
    config = rl.Config(env=env_id, algo="ppo", num_envs=3, num_steps=20, seed=seed,
                       normalize_obs=ENVS[env_id], **QUIET)  # fmt: skip
    envs = [make_env(_factory(env_id), num_envs=3) for _ in range(2)]
    torch.manual_seed(seed)
    policy = build_policy(config, envs[0])
    reference = copy.deepcopy(policy)
    torch.manual_seed(seed + 7)  # the child forked below samples from this generator's state
    overlapped = OverlapCollector(Collector(envs[0], policy, 20, seed=seed), policy, process)
    assert overlapped.process == process
    got, weights = [], [copy.deepcopy(list(policy.parameters()))]
    for k in range(4):
        got.append(overlapped.collect())
        if process:  # every rollout is collected in another process
            assert overlapped._child.pid != os.getpid() and overlapped._child.is_alive()
        stats = [b.clone() for b in policy.buffers()]
        _fake_update(policy, k)
        weights.append(copy.deepcopy(list(policy.parameters())))
    overlapped.close()
    plain = Collector(envs[1], reference, 20, seed=seed)
    torch.manual_seed(seed + 7)
    for k in range(4):
        with torch.no_grad():
            for p, w in zip(reference.parameters(), weights[max(k - 1, 0)]):
                p.copy_(w)
        _assert_same(got[k], plain.collect(), k)
        assert got[k].policy_lag == min(k, 1)
    assert any(bool(r.truncated.any()) for r in got)
    for mine, want in zip(stats, reference.buffers()):
        assert torch.equal(mine, want)
    for e in envs:
        e.close()


def test_a_lagged_rollout_is_weighted_from_the_behaviour_to_the_proximal_policy() -> None:
    """Lagged (overlap): the log-probabilities become the current (proximal) policy's, and
    ``behaviour_weights`` = pi_prox / mu with mu the stored behaviour log-probabilities; on
    policy there are no weights. Values are re-evaluated either way (normalisation on)."""
    from logtrick.rl.build import make_learner
    from logtrick.rl.update import flatten, prepare

    for normalize_obs in (True, False):
        config = rl.Config(env="Pendulum-v1", algo="ppo", num_envs=2, num_steps=16,
                           normalize_obs=normalize_obs, **QUIET)  # fmt: skip
        envs = make_env(config.env, num_envs=2)
        learner = make_learner(config, envs)
        ro = Collector(envs, learner.policy, 16, seed=0).collect()
        _fake_update(learner.policy, 0)
        fresh = prepare(learner, ro)
        ro.policy_lag = 1
        lagged = prepare(learner, ro)
        with torch.no_grad():
            now, _, _ = learner.policy.evaluate_actions(ro.obs, ro.actions)
        assert fresh.behaviour_weights is None
        assert torch.equal(lagged.log_probs, now) and not torch.equal(now, ro.log_probs)
        assert torch.allclose(lagged.behaviour_weights, (now - ro.log_probs).exp())
        assert "behaviour_weights" in flatten(lagged) and "behaviour_weights" not in flatten(fresh)
        if normalize_obs:
            assert torch.equal(fresh.log_probs, now)
            assert torch.equal(lagged.values, fresh.values)
        envs.close()


def test_the_decoupled_objective_is_the_on_policy_gradient_by_exact_enumeration() -> None:
    """A 4-armed bandit, behaviour mu != proximal pi: the expected gradient of PPO's loss on a
    lagged rollout (samples from mu, weights pi/mu) at theta = pi equals the on-policy
    gradient E_pi[A grad log pi], exactly (enumerating the actions with mu's probabilities);
    without the weights it is E_mu[...], which differs."""
    from logtrick.rl.update import ppo_loss

    actions = torch.arange(4)
    mu = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = torch.tensor([0.3, -0.2, 0.5, 0.1], requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5, 3.0])

    class Bandit:
        def evaluate_actions(self, obs, a, masks=None):  # type: ignore[no-untyped-def]
            lp = torch.log_softmax(logits, 0)[a]
            return lp, torch.zeros_like(lp), torch.zeros_like(lp)

    config = SimpleNamespace(normalize_advantages=False, clip_eps=0.2, clip_value=None,
                             ent_coef=0.0, vf_coef=0.0)  # fmt: skip
    learner = SimpleNamespace(config=config, policy=Bandit())
    prox = torch.log_softmax(logits, 0).detach()
    gradients = {}
    for weighted in (True, False):
        mb = {"obs": actions, "actions": actions, "log_probs": prox, "advantages": adv,
              "returns": torch.zeros(4), "values": torch.zeros(4)}  # fmt: skip
        if weighted:
            mb["behaviour_weights"] = prox.exp() / mu
        logits.grad = None
        per_action = []
        for i in range(4):  # the loss of a one-sample minibatch, each action in turn
            one = {k: v[i : i + 1] for k, v in mb.items()}
            (g,) = torch.autograd.grad(ppo_loss(learner, one)[0], logits)  # type: ignore[arg-type]
            per_action.append(g)
        gradients[weighted] = sum(m * g for m, g in zip(mu, per_action))
    pi = prox.exp()
    grad_log_pi = [torch.autograd.grad(torch.log_softmax(logits, 0)[i], logits)[0]
                   for i in range(4)]  # fmt: skip
    on_policy = -sum(pi[i] * adv[i] * grad_log_pi[i] for i in range(4))
    assert torch.allclose(gradients[True], on_policy, atol=1e-6)
    assert not torch.allclose(gradients[False], on_policy, atol=1e-3)


def _metrics(run_dir: Path) -> list[str]:
    return (run_dir / "metrics.csv").read_text().splitlines()


def test_overlapped_run_resumes_and_repeats(tmp_path: Path) -> None:
    """A run with overlap learns through a checkpoint; resuming one checkpoint twice gives the
    same continuation."""
    config = rl.Config(env="CartPole-v1", algo="ppo", total_steps=1024, num_envs=4, num_steps=64,
                       overlap=True, anneal_lr=False, eval_every=0, checkpoint_every=512,
                       out=str(tmp_path),
                       run_name="a", **QUIET)  # fmt: skip
    first = rl.train(config)
    assert len(first.history) == 4
    runs = []
    for name in ("b", "c"):
        shutil.copytree(first.run_dir, tmp_path / name)
        longer = rl.Config(**{**config.to_dict(), "total_steps": 2048})
        runs.append(rl.train(longer, resume=tmp_path / name))
    assert len(runs[0].history) == len(runs[1].history) == 8
    skip = ("time", "sps")
    rows = [[{k: v for k, v in r.items() if k not in skip} for r in run.history] for run in runs]
    assert repr(rows[0]) == repr(rows[1])  # NaN cells (no evaluation) compare by repr


def test_overlap_refuses_several_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With torchrun each rank's update is a collective: overlap is refused before any env."""
    from logtrick.rl import build, distributed

    monkeypatch.setattr(distributed, "ranks_from_env", lambda: distributed.Ranks(0, 2))
    config = rl.Config(env="CartPole-v1", algo="ppo", total_steps=64, overlap=True, **QUIET)
    with pytest.raises(ValueError, match="overlap: each torchrun rank"):
        build.new_collector(SimpleNamespace(config=config), None, SimpleNamespace(update=0))  # type: ignore[arg-type]


def test_envpool_refuses_ray_workers() -> None:
    with pytest.raises(ValueError, match="vector_env"):
        rl.train(rl.Config(env="CartPole-v1", algo="ppo", total_steps=64,
                           vector_env="envpool", workers=2, **QUIET))  # fmt: skip


class _RaisesAt(gym.Wrapper):
    """CartPole whose ``at``-th step raises."""

    def __init__(self, at: int) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.at, self.steps = at, 0

    def step(self, action: object) -> tuple:
        self.steps += 1
        if self.steps == self.at:
            raise RuntimeError("sensor failure")
        return self.env.step(action)


def test_an_env_raising_in_the_collecting_process_is_an_env_error(tmp_path: Path) -> None:
    """The error of an env stepped in the forked child is the EnvError a plain run gives:
    the env, step(), its index and the update; no child is left behind."""
    agent = rl.Agent(lambda: _RaisesAt(40), algo="ppo", num_envs=2, num_steps=16,
                     total_steps=256, overlap=True, eval_every=0, out=str(tmp_path),
                     **QUIET)  # fmt: skip
    with pytest.raises(rl.EnvError) as err:
        agent.learn()
    message = str(err.value)
    for part in ("CartPoleEnv", "RuntimeError: sensor failure", "step()", "env index", "update"):
        assert part in message, (part, message)
    assert multiprocessing.active_children() == []


def test_a_collecting_process_that_dies_is_an_error_naming_its_exit_code() -> None:
    config = rl.Config(env="CartPole-v1", algo="ppo", num_envs=2, num_steps=8, **QUIET)
    envs = make_env(config.env, num_envs=2)
    policy = build_policy(config, envs)
    overlapped = OverlapCollector(Collector(envs, policy, 8, seed=0), policy, process=True)
    overlapped.collect()  # lag 0; the child starts the next at once
    overlapped._child.kill()
    with pytest.raises(RuntimeError, match=r"overlap: the process collecting .*exit code -9"):
        overlapped.collect()
    overlapped.close()
    envs.close()
    assert multiprocessing.active_children() == []


def test_a_trained_overlapped_run_leaves_no_process(tmp_path: Path) -> None:
    """``rl.train`` with overlap (Gymnasium's envs: the forked child) learns and ends it."""
    result = rl.train(rl.Config(env="CartPole-v1", algo="ppo", num_envs=2, num_steps=32,
                                total_steps=256, overlap=True, eval_every=0, out=str(tmp_path),
                                **QUIET))  # fmt: skip
    assert len(result.history) == 4
    assert multiprocessing.active_children() == []


def test_a_thread_where_a_fork_cannot_be(monkeypatch: pytest.MonkeyPatch) -> None:
    """EnvPool's threads and CUDA do not survive a fork, nor may a user's own vector env be
    assumed to: those overlap in a thread; so does a machine without fork."""
    from logtrick.rl import overlap

    config = rl.Config(env="CartPole-v1", algo="ppo", num_envs=2, num_steps=8, **QUIET)
    envs = make_env(config.env, num_envs=2)
    policy = build_policy(config, envs)
    collector = Collector(envs, policy, 8, seed=0)
    assert overlap.can_fork(collector, policy)
    own = SimpleNamespace(env=object())  # not one of Gymnasium's vector envs
    assert not overlap.can_fork(own, policy)  # type: ignore[arg-type]
    monkeypatch.setattr(overlap.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert not overlap.can_fork(collector, policy)
    envs.close()


class _UnpicklableError(RuntimeError):
    def __init__(self) -> None:
        super().__init__("a lock inside")
        self.lock = threading.Lock()  # pickling it fails


class _RaisesUnpicklable(_RaisesAt):
    def step(self, action: object) -> tuple:
        self.steps += 1
        if self.steps == self.at:
            raise _UnpicklableError
        return self.env.step(action)


def test_an_error_that_does_not_pickle_still_names_its_type_and_text(tmp_path: Path) -> None:
    """The child cannot send an exception that does not pickle: it sends its type and text,
    and the run still ends with the EnvError naming the env and the step."""
    agent = rl.Agent(lambda: _RaisesUnpicklable(40), algo="ppo", num_envs=2, num_steps=16,
                     total_steps=256, overlap=True, eval_every=0, out=str(tmp_path),
                     **QUIET)  # fmt: skip
    with pytest.raises(rl.EnvError, match=r"_UnpicklableError: a lock inside.* in step\(\)"):
        agent.learn()
    assert multiprocessing.active_children() == []
