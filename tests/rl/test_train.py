"""The trainer end to end: learning outcomes, reproducibility, checkpoints, resume, interrupts."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from logtrick import rl
from logtrick.rl.runs import read_metrics

QUIET = {"progress": False, "tensorboard": False}
DETERMINISTIC_COLUMNS = ("global_step", "episode_return", "episode_length", "policy_loss",
                         "value_loss", "entropy", "eval_return")  # fmt: skip


def _same_curves(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b), (len(a), len(b))
    for ra, rb in zip(a, b):
        for key in DETERMINISTIC_COLUMNS:
            if key in ra:
                va, vb = float(ra[key]), float(rb[key])
                assert (math.isnan(va) and math.isnan(vb)) or va == vb, (key, ra, rb)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce", "npg"])
def test_solves_cartpole(algo: str, tmp_path: Path) -> None:
    """Each algorithm's preset reaches CartPole's 475 threshold (20 deterministic episodes)."""
    config = rl.preset("CartPole-v1", algo, seed=0, eval_every=5_000, stop_at_threshold=True,
                       out=str(tmp_path), **QUIET)  # fmt: skip
    result = rl.train(config)
    assert result.solved_at_step is not None, result.history[-1]
    mean, _ = rl.evaluate(result.policy, "CartPole-v1", episodes=20, seed=10_000)
    assert mean >= 475.0


@pytest.mark.slow
def test_ppo_improves_pendulum(tmp_path: Path) -> None:
    """Continuous actions: PPO lifts Pendulum far above a random policy (about −1200)."""
    config = rl.preset("Pendulum-v1", "ppo", seed=0, total_steps=50_000, out=str(tmp_path), **QUIET)
    result = rl.train(config)
    mean, _ = rl.evaluate(result.policy, "Pendulum-v1", episodes=10, seed=123)
    assert mean > -700.0, mean


def test_same_seed_same_curve(tmp_path: Path) -> None:
    config = rl.preset("CartPole-v1", "ppo", total_steps=4_096, out=str(tmp_path), **QUIET)
    a = rl.train(config)
    b = rl.train(config)
    assert a.run_dir != b.run_dir  # nothing is overwritten
    _same_curves(a.history, b.history)
    c = rl.train(rl.preset("CartPole-v1", "ppo", total_steps=4_096, seed=1, out=str(tmp_path),
                           **QUIET))  # fmt: skip
    assert [r["episode_return"] for r in c.history] != [r["episode_return"] for r in a.history]


def test_run_directory_and_checkpoint(tmp_path: Path) -> None:
    config = rl.preset("CartPole-v1", "a2c", total_steps=2_000, out=str(tmp_path), **QUIET)
    result = rl.train(config)
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.json", "metrics.csv", "checkpoint.pt", "learning_curve.png"} <= names
    assert (result.run_dir / "learning_curve.png").stat().st_size > 1_000
    state = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)  # runs no code
    assert state["counters"]["global_step"] == result.history[-1]["global_step"]
    assert len(read_metrics(result.run_dir / "metrics.csv")) == len(result.history)
    policy = rl.load(result.run_dir)
    obs = torch.randn(5, 4)
    torch.testing.assert_close(policy.distribution(obs).logits,
                               result.policy.distribution(obs).logits)  # fmt: skip
    assert not any(p.name.endswith(".tmp") for p in result.run_dir.iterdir())


def test_resume_extends_a_finished_run(tmp_path: Path) -> None:
    """4 updates, then extended to 8 on resume (from two copies of the run directory).

    The metrics of the first 4 updates are kept as they were, equal to those of an
    uninterrupted 8-update run (checkpoints every 2 updates change nothing). The resume resets
    the envs with seeds from (seed, update), so the last 4 updates differ from the uninterrupted
    run's, but two resumes of the same checkpoint are identical. The learning rate is constant:
    an annealed run that has finished has no learning rate left to extend with."""
    base = dict(total_steps=8 * 256, num_envs=8, num_steps=32, checkpoint_every=512,
                anneal_lr=False, **QUIET)  # fmt: skip
    whole = rl.train(rl.preset("CartPole-v1", "ppo", out=str(tmp_path / "a"), **base))
    half = rl.preset("CartPole-v1", "ppo", out=str(tmp_path / "b"), **{**base, "total_steps": 1024})
    run_dir = rl.train(half).run_dir
    shutil.copytree(run_dir, tmp_path / "copy")
    longer = dataclasses.replace(half, total_steps=8 * 256)
    resumed = rl.train(longer, resume=run_dir)
    again = rl.train(longer, resume=tmp_path / "copy")
    assert resumed.run_dir == run_dir
    assert len(resumed.history) == len(again.history) == 8
    _same_curves(whole.history[:4], resumed.history[:4])
    _same_curves(again.history, resumed.history)
    _same_curves(resumed.history, read_metrics(run_dir / "metrics.csv"))


SCRIPT = """
import sys
from logtrick import rl
config = rl.preset("CartPole-v1", "ppo", total_steps={steps}, num_envs=8, num_steps=32,
                   checkpoint_every=256, out=sys.argv[1], progress=False, tensorboard=False)
result = rl.train(config)
print("interrupted" if result.interrupted else "finished", result.history[-1]["global_step"])
"""


def _start(tmp_path: Path, steps: int) -> subprocess.Popen[str]:
    code = textwrap.dedent(SCRIPT).format(steps=steps)
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _wait_for_updates(run_dir: Path, proc: subprocess.Popen[str], n: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "metrics.csv").exists() and len(read_metrics(run_dir / "metrics.csv")) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the training process made no progress")


@pytest.mark.slow
def test_sigkill_then_resume_continues(tmp_path: Path) -> None:
    """A SIGKILL leaves a loadable checkpoint and releases the run's lock; the resumed run
    keeps the uninterrupted run's metrics up to that checkpoint and finishes the budget."""
    steps = 40 * 256
    proc = _start(tmp_path / "killed", steps)
    run_dir = tmp_path / "killed" / "CartPole-v1-ppo-0"
    _wait_for_updates(run_dir, proc, 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # still loadable
    saved_at = state["counters"]["update"]
    assert 1 <= saved_at < 40
    resumed = rl.train(resume=run_dir)
    whole_config = rl.preset(
        "CartPole-v1",
        "ppo",
        total_steps=steps,
        num_envs=8,
        num_steps=32,
        checkpoint_every=256,
        out=str(tmp_path / "whole"),
        **QUIET,
    )
    whole = rl.train(whole_config)
    assert len(resumed.history) == len(whole.history) == 40
    _same_curves(whole.history[:saved_at], resumed.history[:saved_at])


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_cleanly(tmp_path: Path) -> None:
    proc = _start(tmp_path, 400 * 256)
    run_dir = tmp_path / "CartPole-v1-ppo-0"
    _wait_for_updates(run_dir, proc, 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("interrupted")
    steps = int(out.split()[1])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["counters"]["global_step"] == steps < 400 * 256


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match="algo"):
        rl.Config(algo="sac")
    with pytest.raises(ValueError, match="num_minibatches"):
        rl.Config(num_envs=3, num_steps=5, num_minibatches=16)
    with pytest.raises(ValueError, match="total_steps"):
        rl.Config(total_steps=0)
    with pytest.raises(ValueError, match="CartPole-v1"):
        rl.train(rl.Config(env="CartPol-v1", **QUIET))


def test_load_refuses_a_non_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run_dir"):
        rl.load(tmp_path)


def test_tensorboard_events_are_written_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    config = rl.preset("CartPole-v1", "a2c", total_steps=400, out=str(tmp_path), progress=False)
    result = rl.train(config)
    events = list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
