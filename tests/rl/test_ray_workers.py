"""Rollout workers on Ray (a real local runtime with 2 CPUs, started once for the module).

Equivalence: with a fixed policy, W workers x E envs produce exactly the transitions of one
process with W E envs under the same seeds, observation normalisation on (the Acrobot preset):
the workers act on the learner's statistics frozen for the iteration, and the statistics after
it are the same. Seeds: a restarted worker and a resumed run draw fresh streams. Faults: a
worker SIGKILLed, or one that does not answer within the timeout, is restarted and its share
collected again; an env that raises ends the run with a one-line error and a checkpoint; one
that keeps dying ends it with the cause from its own log (or goes on without it); an env
factory the workers cannot load is refused before any worker starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest
import torch

ray = pytest.importorskip("ray")

from logtrick.rl import Agent, train  # noqa: E402
from logtrick.rl.config import Config, preset  # noqa: E402
from logtrick.rl.distributed import (  # noqa: E402
    WORKER_STREAM,
    RankCollector,
    obs_stats,
    stream_seed,
)
from logtrick.rl.envs import make_env  # noqa: E402
from logtrick.rl.errors import WorkerError  # noqa: E402
from logtrick.rl.policies import build_policy  # noqa: E402
from logtrick.rl.rollout import Collector, Rollout  # noqa: E402
from logtrick.rl.workers import RayCollector, WorkerFaults  # noqa: E402

SEEDS = [11, 12, 13, 14]


class _Faulty(gym.Wrapper):
    """CartPole whose ``step`` fails at the env's ``at``-th step: ``"raise"`` an exception, or
    ``"die"``: write a cause to stderr and end the process (as a crashing simulator does)."""

    def __init__(self, how: str, at: int) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.how, self.at, self.steps = how, at, 0

    def step(self, action: object) -> tuple:
        self.steps += 1
        if self.steps == self.at and self.how == "raise":
            raise RuntimeError("sensor failure")
        if self.steps == self.at and self.how == "die":
            sys.stderr.write("fatal: simulator out of coolant\n")
            sys.stderr.flush()
            os._exit(3)
        return self.env.step(action)


def raising_cartpole() -> gym.Env:
    return _Faulty("raise", 60)  # past the steps of the env checker's probe


def dying_cartpole() -> gym.Env:
    return _Faulty("die", 3)


@pytest.fixture(scope="module", autouse=True)
def ray_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # a private temp dir: no other process finds this runtime with address="auto"
    temp = tempfile_dir()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    # the faulty env factories below travel by value: the workers cannot import this module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay < 108 chars


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


CONFIGS = {
    # the Acrobot preset normalises observations (and rewards); episodes run on past T
    "Acrobot-v1": lambda: preset("Acrobot-v1", "ppo", num_envs=4, num_steps=40, workers=2,
                                 progress=False, plot=False, tensorboard=False),
    # CartPole with normalisation: episodes end inside, autoreset rows are compared too
    "CartPole-v1": lambda: _config(normalize_obs=True),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("env", sorted(CONFIGS))
def test_workers_produce_the_transitions_of_one_process_with_normalisation_on(env: str) -> None:
    config = CONFIGS[env]()
    assert config.normalize_obs
    policy = _fixed_policy(config)
    local = RankCollector(Collector(make_env(config.env, num_envs=4), policy, config.num_steps),
                          policy)  # fmt: skip
    local.collector.reset(seed=SEEDS)
    remote_policy = _fixed_policy(config)
    remote = RayCollector(config, remote_policy, SEEDS)
    try:
        for i in range(3):  # later rollouts act on the statistics of the earlier ones
            want, got = local.collect(), remote.collect()
            _assert_same(got, want)
            for a, b in zip(obs_stats(remote_policy), obs_stats(policy)):
                assert torch.equal(a, b), f"rollout {i}: statistics"
            assert float(policy.obs_count) == 160 * (i + 1)
        assert want.terminated.any() or env == "Acrobot-v1"
    finally:
        remote.close()
        local.collector.env.close()


@pytest.mark.slow
def test_a_restarted_worker_and_a_resumed_run_draw_fresh_streams_reproducibly() -> None:
    config = _config()
    seeds = lambda c: ray.get(  # noqa: E731
        [w.__ray_call__.remote(lambda self: torch.initial_seed()) for w in c.workers.values()]
    )
    first = RayCollector(config, _fixed_policy(config), SEEDS)
    try:
        start = seeds(first)
        assert start == [stream_seed(config.seed, WORKER_STREAM, w, 0) for w in range(2)]
        first.collect()
        _kill(first, 0)
        with pytest.warns(RuntimeWarning, match="worker 0"):
            first.collect()
        after = seeds(first)
        assert after[0] != start[0] and after[1] == start[1]
        assert after[0] == stream_seed(config.seed, WORKER_STREAM, 0, 1, 1)
    finally:
        first.close()
    resumed = RayCollector(config, _fixed_policy(config), SEEDS, update=7)
    try:
        assert seeds(resumed) == [stream_seed(config.seed, WORKER_STREAM, w, 7) for w in range(2)]
        assert not set(seeds(resumed)) & set(start)
    finally:
        resumed.close()


@pytest.mark.slow
def test_overlap_collects_each_rollout_with_the_weights_of_one_update_before() -> None:
    config = _config(overlap=True)
    old = _fixed_policy(config)
    local = RankCollector(Collector(make_env(config.env, num_envs=4), old, config.num_steps), old)
    local.collector.reset(seed=SEEDS)
    policy = _fixed_policy(config)
    remote = RayCollector(config, policy, SEEDS)
    try:
        _assert_same(remote.collect(), local.collect())
        with torch.no_grad():  # "the update": the deterministic actions flip
            policy.actor[-1].weight.neg_()
            policy.actor[-1].bias.neg_()
        lagged = remote.collect()  # started before the update: the old weights
        _assert_same(lagged, local.collect())
        flipped = remote.collect()  # started after it
        want = local.collect()
        assert not torch.equal(flipped.actions, want.actions)
    finally:
        remote.close()
        local.collector.env.close()


@pytest.mark.slow
def test_workers_start_when_no_cpu_is_free_oversubscribing_instead_of_waiting() -> None:
    config = _config()
    collectors = []
    try:
        for workers in (1, 2, 2):  # 1 + 2 x 0.5 CPUs take both; the last two reserve none
            collectors.append(RayCollector(_config(workers=workers), _fixed_policy(config), SEEDS,
                                           faults=WorkerFaults(startup_s=60)))  # fmt: skip
        for collector in collectors:
            assert collector.collect().rewards.shape == (40, 4)
    finally:
        for collector in collectors:
            collector.close()


def _kill(collector: RayCollector, w: int) -> None:
    pid = ray.get(collector.workers[w].pid.remote())  # type: ignore[union-attr]
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_killed_or_silent_worker_is_restarted_and_its_share_collected() -> None:
    config = _config()
    faults = WorkerFaults(timeout_s=2.0)
    collector = RayCollector(config, _fixed_policy(config), SEEDS, faults=faults)
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
    # observable: steps and seconds per worker, restarts, episodes and their return range
    assert [row["worker_restarts"] for row in result.history] == [0, 1, 1]
    for row in result.history:
        assert row["worker0_steps"] == row["worker1_steps"] == 80
        assert row["worker0_seconds"] > 0 and row["worker1_seconds"] > 0
        assert row["episodes"] > 0
        assert row["episode_return_min"] <= row["episode_return_max"]
    header = (result.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("worker0_steps", "worker1_seconds", "worker_restarts", "episodes",
                   "episode_return_min", "episode_return_max"):  # fmt: skip
        assert column in header


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


def test_the_fault_settings_come_from_the_config_and_the_command_line() -> None:
    from logtrick import cli

    args = cli.build_parser().parse_args(
        ["train", "CartPole-v1", "--workers", "2", "--worker-timeout", "900",
         "--worker-restarts", "0", "--worker-failure", "continue", "--set", "dist_timeout_s=120"]
    )  # fmt: skip
    config = Config(**cli.train_overrides(args))
    assert WorkerFaults.of(config) == WorkerFaults(900.0, 0, "continue")
    assert config.dist_timeout_s == 120.0
    assert WorkerFaults.of(Config()) == WorkerFaults(120.0, 3, "stop")
    for field, value in (("worker_timeout_s", 0), ("worker_restarts", -1),
                         ("worker_failure", "retry"), ("dist_timeout_s", -5)):  # fmt: skip
        with pytest.raises(ValueError, match=field):
            Config(**{field: value})


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


@pytest.mark.slow
def test_an_env_that_raises_in_a_worker_ends_the_run_with_one_line_and_a_checkpoint(
    tmp_path: Path,
) -> None:
    agent = Agent(raising_cartpole, "ppo", num_envs=4, num_steps=40, workers=2,
                  out=str(tmp_path), progress=False, plot=False, tensorboard=False)  # fmt: skip
    with pytest.raises(WorkerError) as caught:
        agent.learn(10_000)
    agent.close()
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(r"env raising_cartpole, worker 0, rollout step \d+ \(env step [\d,]+", message)
    assert "RuntimeError: sensor failure" in message
    run_dir = next(tmp_path.iterdir())
    assert f"written to {run_dir / 'checkpoint.pt'}" in message
    assert (run_dir / "checkpoint.pt").exists()
    notes = "\n".join(caught.value.__notes__)
    assert "Traceback" in notes and "sensor failure" in notes


@pytest.mark.slow
def test_a_worker_that_keeps_dying_ends_the_run_with_the_cause_from_its_log() -> None:
    config = _config()
    collector = RayCollector(config, _fixed_policy(config), SEEDS,
                             faults=WorkerFaults(restarts=1), env=dying_cartpole)  # fmt: skip
    try:
        with pytest.raises(WorkerError) as caught:
            collector.collect()
    finally:
        collector.close()
    message = str(caught.value)
    assert "worker 0 failed 2 times in a row" in message
    assert "fatal: simulator out of coolant" in message


@pytest.mark.slow
def test_a_lost_worker_can_be_left_behind_and_the_run_goes_on() -> None:
    config = _config()
    faults = WorkerFaults(restarts=0, on_lost="continue")
    collector = RayCollector(config, _fixed_policy(config), SEEDS, faults=faults)
    try:
        assert collector.collect().rewards.shape == (40, 4)
        _kill(collector, 1)
        with pytest.warns(RuntimeWarning, match="going on with 1 workers"):
            assert collector.collect().rewards.shape == (40, 2)
        assert collector.collect().rewards.shape == (40, 2)
    finally:
        collector.close()


def test_an_env_factory_the_workers_cannot_load_is_refused_before_any_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    def start(self: RayCollector, w: int, seeds: list[int]) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr(RayCollector, "_start", start)
    ghost = types.ModuleType("ghost_envs")  # importable here, not in a worker process
    exec("import gymnasium as gym\ndef make():\n    return gym.make('CartPole-v1')", ghost.__dict__)
    sys.modules["ghost_envs"] = ghost
    try:
        with pytest.raises(ValueError, match="env: make cannot be loaded by Ray workers"):
            RayCollector(_config(), _fixed_policy(_config()), SEEDS, env=ghost.make)
    finally:
        del sys.modules["ghost_envs"]
    lock = threading.Lock()
    unpicklable = lambda: lock and gym.make("CartPole-v1")  # noqa: E731
    with pytest.raises(ValueError, match="cannot be sent to Ray workers: pickling it failed"):
        RayCollector(_config(), _fixed_policy(_config()), SEEDS, env=unpicklable)


def test_a_ray_address_nothing_answers_fails_in_stated_time_naming_it() -> None:
    code = (
        "import time; from logtrick.rl.ray_setup import connect, RAY_CONNECT_S\n"
        "t = time.monotonic()\n"
        "try:\n    connect('127.0.0.1:1')\nexcept ConnectionError as err:\n"
        "    print(f'{time.monotonic() - t:.1f}', RAY_CONNECT_S, err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=os.environ)  # fmt: skip
    seconds, limit, message = done.stdout.split(" ", 2)
    assert float(seconds) <= float(limit) + 5
    assert "ray_address: nothing answers at '127.0.0.1:1'" in message


@pytest.mark.slow
def test_the_ray_processes_a_run_started_are_gone_when_it_exits(tmp_path: Path) -> None:
    code = (
        "import ray; from logtrick.rl import Config, train\n"
        "from logtrick.rl import workers\n"
        "original = workers.RayCollector.close\n"
        "def close(self):\n"
        "    print('SESSION', ray._private.worker._global_node.get_session_dir_path(), "
        "flush=True)\n"
        "    original(self)\n"
        "workers.RayCollector.close = close\n"
        f"train(Config(total_steps=160, num_envs=4, num_steps=40, workers=2, "
        f"out={str(tmp_path)!r}, progress=False, plot=False, tensorboard=False))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=os.environ)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    session = done.stdout.split("SESSION ", 1)[1].split()[0]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _processes_of(session):
        time.sleep(0.5)
    assert _processes_of(session) == []


def _processes_of(session: str) -> list[str]:
    """Command lines of the live processes that mention Ray session dir ``session``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if session in cmdline or Path(session).parent.as_posix() + "/" in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_the_command_line_ends_an_env_error_in_a_worker_with_one_line_and_exit_code_1(
    tmp_path: Path,
) -> None:
    src = str(Path(__import__("logtrick").__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(Path(__file__).parent)])}
    args = [sys.executable, "-m", "logtrick", "train", "faulty_envs:RaisingCartPole-v0",
            "--algo", "ppo", "--workers", "2", "--envs", "4", "--steps", "10000", "--out",
            str(tmp_path), "--no-progress", "--set", "plot=false", "tensorboard=false"]  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "env faulty_envs:RaisingCartPole-v0, worker 0, rollout step " in errors[0]
    assert "RuntimeError: sensor failure" in errors[0] and "last good checkpoint" in errors[0]
    assert len(list(tmp_path.rglob("checkpoint.pt"))) == 1
    traced = subprocess.run([*args[:3], "--traceback", *args[3:]], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert traced.returncode == 1
    assert "Traceback" in traced.stderr and "the worker's traceback" in traced.stderr
    assert 'raise RuntimeError("sensor failure")' in traced.stderr
