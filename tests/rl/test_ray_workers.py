"""Rollout workers on Ray (a real local runtime with 2 CPUs, started once for the module).

Equivalence: with a fixed policy, W workers x E envs produce exactly the transitions of one
process with W E envs under the same seeds. Faults: a worker SIGKILLed, or one that does not
answer within the timeout, is restarted and its share collected again; a training run finishes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import torch

ray = pytest.importorskip("ray")

from logtrick.rl import train  # noqa: E402
from logtrick.rl.config import Config  # noqa: E402
from logtrick.rl.envs import make_env  # noqa: E402
from logtrick.rl.policies import build_policy  # noqa: E402
from logtrick.rl.rollout import Collector, Rollout  # noqa: E402
from logtrick.rl.workers import RayCollector  # noqa: E402

SEEDS = [11, 12, 13, 14]


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(**overrides: object) -> Config:
    base = dict(env="CartPole-v1", num_envs=4, num_steps=40, workers=2, progress=False,
                plot=False, tensorboard=False)  # fmt: skip
    return Config(**{**base, **overrides})


def _fixed_policy(config: Config) -> torch.nn.Module:
    """A real ActorCritic made deterministic: logits scaled so one action has probability 1."""
    envs = make_env(config.env, num_envs=1)
    torch.manual_seed(0)
    policy = build_policy(config, envs)
    envs.close()
    with torch.no_grad():
        head = policy.actor[-1]
        head.weight.mul_(1e6)
        head.bias.mul_(1e6)
    return policy


NETWORK_OUTPUTS = ("log_probs", "values", "next_values")
"""Computed on batches of E rows instead of W E: equal up to float rounding of the matmuls."""


def _assert_same(got: Rollout, want: Rollout) -> None:
    """The transitions exactly; the network's outputs to float precision; the same episodes
    (listed worker by worker instead of in (step, env) order)."""
    for f in dataclasses.fields(Rollout):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name in NETWORK_OUTPUTS:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f.name)
        elif b is None or isinstance(b, torch.Tensor):
            assert a is None if b is None else (a.shape == b.shape and torch.equal(a, b)), f.name
        else:
            assert sorted(a) == sorted(b), f.name
    pairs = sorted(zip(got.episode_returns, got.episode_lengths))
    assert pairs == sorted(zip(want.episode_returns, want.episode_lengths))


@pytest.mark.slow
def test_workers_produce_the_transitions_of_one_process() -> None:
    config = _config()
    policy = _fixed_policy(config)
    local = Collector(make_env(config.env, num_envs=4), policy, config.num_steps)
    local.reset(seed=SEEDS)
    remote = RayCollector(config, _fixed_policy(config), SEEDS)
    try:
        for _ in range(2):  # the second rollout continues the episodes of the first
            want, got = local.collect(), remote.collect()
            assert want.terminated.any()  # episodes end inside: autoreset rows are compared too
            _assert_same(got, want)
    finally:
        remote.close()
        local.env.close()


def _kill(collector: RayCollector, w: int) -> None:
    pid = ray.get(collector.workers[w].pid.remote())
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_killed_or_silent_worker_is_restarted_and_its_share_collected() -> None:
    config = _config()
    collector = RayCollector(config, _fixed_policy(config), SEEDS, timeout_s=2.0)
    try:
        collector.collect()
        _kill(collector, 0)
        with pytest.warns(RuntimeWarning, match="worker 0 died or did not answer"):
            ro = collector.collect()
        assert ro.rewards.shape == (config.num_steps, 4)
        # silent: worker 1 is busy for longer than the timeout
        collector.workers[1].__ray_call__.remote(lambda self: time.sleep(30))
        with pytest.warns(RuntimeWarning, match="worker 1 died or did not answer"):
            ro = collector.collect()
        assert ro.rewards.shape == (config.num_steps, 4)
        assert [w for _, w, _ in collector.restarts] == [0, 1]
    finally:
        collector.close()


@pytest.mark.slow
def test_training_run_survives_a_killed_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    original = RayCollector.collect

    def collect(self: RayCollector) -> Rollout:
        if self.iteration == 1:
            _kill(self, 1)
        return original(self)

    monkeypatch.setattr(RayCollector, "collect", collect)
    config = _config(total_steps=3 * 160, out=str(tmp_path), num_minibatches=2)
    with pytest.warns(RuntimeWarning, match="worker 1"):
        result = train(config)
    assert [row["global_step"] for row in result.history] == [160, 320, 480]
    assert (result.run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_without_workers_nothing_imports_ray(tmp_path: object) -> None:
    code = (
        "import sys; from logtrick import cli; from logtrick.rl import Config, train; "
        f"train(Config(total_steps=64, num_envs=2, num_steps=32, num_minibatches=1, "
        f"out={str(tmp_path)!r}, progress=False, plot=False, tensorboard=False)); "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"workers": -1}, "workers"),
        ({"device": "tpu"}, "device"),
        ({"ray_address": ""}, "ray_address"),
    ],
)
def test_scale_out_fields_are_checked(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _config(**overrides)


def test_envs_that_do_not_split_over_the_workers_are_refused_before_anything_runs(
    tmp_path: object,
) -> None:
    config = _config(num_envs=3, out=str(tmp_path))
    with pytest.raises(ValueError, match="num_envs: 3 envs cannot be split evenly over 2"):
        train(config)
    assert not any(tmp_path.iterdir())
    reinforce = _config(algo="reinforce", baseline="none", out=str(tmp_path))
    with pytest.raises(ValueError, match="whole episodes"):
        train(reinforce)
