"""Nothing lost, nothing silent: divergence, run locks, resume rules, the lr schedule, env ids.

Each test here was written against a defect of the trainer (issue 12) and fails without its fix.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import importlib
import itertools
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import registered  # noqa: F401  (registers the test environments)
import torch

from logtrick import rl
from logtrick.cli import main
from logtrick.rl.build import make_learner
from logtrick.rl.checkpoint import checkpoint_state, restore

train_module = importlib.import_module("logtrick.rl.loop")  # the loop (rl.train is a function)

QUIET = {"progress": False, "tensorboard": False, "plot": False}
COUNTER = dict(env="LogtrickCounter-v0", num_envs=2, num_steps=8, num_minibatches=1,
               update_epochs=2, normalize_obs=False, normalize_rewards=False,
               **QUIET)  # fmt: skip
"""An env without a preset: every field the tests rely on is pinned, not left to the defaults
chosen from the env's spaces (which scale rewards, and would tame the reward bomb)."""


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open(newline="") as fh:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]


def _finite_checkpoint(run_dir: Path) -> dict:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for name, value in state["policy"].items():
        assert torch.isfinite(value).all(), name
    return state


# ------------------------------------------------------------------------------- divergence


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    """Rewards of 1e30 from the 40th step of each env: the value loss overflows at update 5
    (16 steps per update, 8 per env). The run stops there, says what diverged and where, and
    the checkpoint of update 4 stays."""
    config = rl.Config(**{**COUNTER, "env": "LogtrickRewardBomb-v0"}, algo="ppo",
                       total_steps=160, checkpoint_every=16, out=str(tmp_path))  # fmt: skip
    with pytest.raises(rl.DivergenceError) as err:
        rl.train(config)
    message = str(err.value)
    assert "diverged" in message and "update 5" in message and "loss" in message, message
    assert "lr" in message and "update 4" in message, message  # the hint and what is kept
    run_dir = tmp_path / "LogtrickRewardBomb-v0-ppo-0"
    assert _finite_checkpoint(run_dir)["counters"]["update"] == 4
    assert [r["update"] for r in _metrics(run_dir)] == [1, 2, 3, 4]


def test_cli_divergence_is_a_message_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--set lr=1e3`` on Pendulum: the Gaussian's log-std explodes in the first update, which
    is due to write a checkpoint: none is written (no NaN checkpoint), the message says what
    diverged and does not blame the env."""
    args = ["train", "Pendulum-v1", "--envs", "2", "--steps", "1024", "--out", str(tmp_path),
            "--no-progress", "--eval-every", "0", "--set", "lr=1e3", "num_steps=64",
            "num_minibatches=2", "update_epochs=2", "checkpoint_every=1", "tensorboard=False",
            "plot=False"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "diverged" in err and "lower lr" in err and "env:" not in err, err
    assert not (tmp_path / "Pendulum-v1-ppo-0" / "checkpoint.pt").exists()


# -------------------------------------------------------------------------------- run lock


def test_a_second_writer_of_a_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = rl.Config(**COUNTER, algo="a2c", total_steps=64, anneal_lr=False, out=str(tmp_path))
    run_dir = rl.train(config).run_dir
    rows = (run_dir / "metrics.csv").read_text()
    with open(run_dir / ".lock", "a") as held:  # another process writing to the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--resume", str(run_dir), "--steps", "128", "--no-progress"])
        assert exit_.value.code == 2
        assert "another process" in capsys.readouterr().err
        with pytest.raises(rl.RunLockedError):
            rl.train(resume=run_dir)
    assert (run_dir / "metrics.csv").read_text() == rows  # nothing truncated or appended
    extended = dataclasses.replace(config, total_steps=128)
    assert len(rl.train(extended, resume=run_dir).history) == 8  # the lock was released


# ------------------------------------------------------------------------------- resume rules


def test_resume_refuses_conflicting_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "LogtrickCounter-v0", "--algo", "a2c", "--envs", "2", "--steps", "64",
            "--out", str(tmp_path), "--no-progress", "--eval-every", "0",
            "--set", "num_steps=8", "anneal_lr=False", "tensorboard=False",
            "plot=False"]  # fmt: skip
    assert main(base) == 0
    run_dir = str(tmp_path / "LogtrickCounter-v0-a2c-0")
    capsys.readouterr()
    for flags, field in ((["--algo", "ppo"], "algo"), (["--seed", "3"], "seed"),
                         (["--set", "lr=0.5"], "lr"), (["--envs", "4"], "num_envs")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--resume", run_dir, "--steps", "128", "--no-progress", *flags])
        assert exit_.value.code == 2, flags
        assert field in capsys.readouterr().err, flags
    assert len(_metrics(Path(run_dir))) == 4  # none of them wrote anything
    # flags equal to the saved values, and the ones a resume may change, are accepted
    assert main(["train", "--resume", run_dir, "--algo", "a2c", "--steps", "128",
                 "--no-progress", "--eval-every", "32"]) == 0  # fmt: skip
    assert len(_metrics(Path(run_dir))) == 8


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, updates: int) -> None:
    """Make the trainer's update send the process a SIGINT (a Ctrl-C) after ``updates`` calls."""
    calls = []
    original = train_module.update

    def update(*args: object, **kwargs: object) -> object:
        out = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == updates:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(train_module, "update", update)


def test_lr_schedule_is_continuous_when_a_run_is_extended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after 4 of 8 updates, then extended to 16: the learning rate never rises."""
    config = rl.Config(**COUNTER, algo="a2c", lr=1e-3, total_steps=8 * 16, out=str(tmp_path))
    _interrupt_after(monkeypatch, 4)
    first = rl.train(config)
    assert first.interrupted and len(first.history) == 4
    monkeypatch.undo()
    rl.train(dataclasses.replace(config, total_steps=16 * 16), resume=first.run_dir)
    lrs = [r["lr"] for r in _metrics(first.run_dir)]
    assert len(lrs) == 16
    assert all(b <= a for a, b in itertools.pairwise(lrs)), lrs
    assert lrs[0] == pytest.approx(1e-3) and 0 < lrs[-1] < lrs[0] / 10
    assert lrs[4] == pytest.approx(lrs[3] - 1e-3 / 8, rel=0.2)  # no jump at the seam


def test_extending_a_finished_annealed_run_is_refused(tmp_path: Path) -> None:
    config = rl.Config(**COUNTER, algo="a2c", total_steps=64, out=str(tmp_path))
    run_dir = rl.train(config).run_dir
    with pytest.raises(ValueError, match=r"annealed.*anneal_lr"):
        rl.train(dataclasses.replace(config, total_steps=128), resume=run_dir)


def test_periodic_checkpoints_leave_the_envs_alone(tmp_path: Path) -> None:
    """A checkpoint after every update gives the same run as one checkpoint at the end."""
    config = rl.Config(**{**COUNTER, "env": "CartPole-v1"}, algo="ppo", total_steps=10 * 16)
    often = rl.train(dataclasses.replace(config, checkpoint_every=16, out=str(tmp_path / "a")))
    rarely = rl.train(dataclasses.replace(config, checkpoint_every=10**6, out=str(tmp_path / "b")))
    for key in ("episode_return", "policy_loss", "value_loss"):
        a = [r[key] for r in often.history]
        b = [r[key] for r in rarely.history]
        assert a == b or all(math.isnan(x) and math.isnan(y) for x, y in zip(a, b)), key


def test_resume_is_deterministic_and_the_learner_state_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after 2 of 6 updates: the restored learner (weights, optimizer, RNGs,
    observation and reward statistics, schedule) is the saved one, bit for bit, and resuming
    the checkpoint twice gives the same run."""
    config = rl.Config(**{**COUNTER, "env": "CartPole-v1", "normalize_obs": True,
                          "normalize_rewards": True}, algo="ppo", total_steps=6 * 16,
                       out=str(tmp_path))  # fmt: skip
    _interrupt_after(monkeypatch, 2)
    run_dir = rl.train(config).run_dir
    monkeypatch.undo()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert saved.pop("run")["seed"] == config.seed and saved.pop("checksums")  # the file's own
    assert saved["counters"]["update"] == 2
    envs = rl.make_env("CartPole-v1", num_envs=2)
    learner = make_learner(config, envs)
    envs.close()
    counters = restore(learner, saved)
    _assert_same(saved, checkpoint_state(learner, counters))
    copies = [tmp_path / "copy1", tmp_path / "copy2"]
    for copy in copies:
        shutil.copytree(run_dir, copy)
    resumed = [rl.train(resume=copy).history for copy in copies]
    assert len(resumed[0]) == len(resumed[1]) == 6
    for a, b in zip(*resumed):
        for key in ("global_step", "episode_return", "policy_loss", "value_loss", "lr"):
            assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key])), key


def _assert_same(a: object, b: object, path: str = "state") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, path


# --------------------------------------------------------------------------------- env ids


@pytest.mark.parametrize("env", ["logtrick-test/Counter-v0", "registered:LogtrickCounter-v0"])
def test_namespaced_and_module_env_ids_train(env: str, tmp_path: Path) -> None:
    result = rl.train(rl.Config(**{**COUNTER, "env": env}, algo="a2c", total_steps=32,
                                out=str(tmp_path)))  # fmt: skip
    assert result.run_dir.parent == tmp_path  # one directory, named after the id
    assert "/" not in result.run_dir.name and ":" not in result.run_dir.name
    assert len(result.history) == 2
    assert rl.load(result.run_dir) is not None


# ------------------------------------------------------------------- REINFORCE, whole episodes


@pytest.mark.parametrize("baseline", ["none", "mean"])
def test_reinforce_without_a_critic_trains_on_whole_episodes(baseline: str, tmp_path: Path) -> None:
    """Episodes of 7 steps, rollouts of 4: every rollout runs on to the end of the episode, so no
    return is cut at the rollout boundary (7 steps per update, not 4)."""
    config = rl.Config(env="LogtrickEpisode7-v0", algo="reinforce", baseline=baseline,
                       num_envs=1, num_steps=4, total_steps=21, out=str(tmp_path),
                       **QUIET)  # fmt: skip
    result = rl.train(config)
    steps = [r["global_step"] for r in result.history]
    assert steps == [7, 14, 21], steps
    assert [r["episode_length"] for r in result.history] == [7, 7, 7]
