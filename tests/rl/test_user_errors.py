"""Every user error is one line naming the argument; no unbounded wait; messages say what
actually happened (issue 24, sections 1 and 4).

Each test fails on the code before issue 24: raw tracebacks (``RuntimeError: boom``, numpy's
"setting an array element with a sequence", ``AttributeError: ... 'items'``, "Overflow when
unpacking long long", gymnasium's ``Error: Seed must be ...``, "could not convert string to
float", ``num_envs`` named for ``episodes``), an evaluation that never ended, a target return
of 0 read as "no target", and "20 deterministic episodes" printed for ``eval_episodes=2``.
"""

from __future__ import annotations

import math
import re
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TimeLimit

from logtrick import rl
from logtrick.cli import main
from logtrick.rl import runs

QUIET = dict(progress=False, tensorboard=False, plot=False, eval_every=0)
TINY = dict(
    num_envs=2,
    num_steps=8,
    num_minibatches=1,
    update_epochs=1,
    total_steps=64,
    anneal_lr=False,
    **QUIET,
)


class Broken(gym.Env):
    """A small env (episodes of 10 steps) that breaks Gymnasium's API as ``mode`` says;
    ``"step raises"`` on its ``raise_at``-th step since it was made."""

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(self, mode: str = "", raise_at: int = 7) -> None:
        self.mode, self.raise_at, self.t, self.steps = mode, raise_at, 0, 0
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> object:
        super().reset(seed=seed)
        self.t = 0
        obs = np.zeros(2, np.float32)
        return obs if self.mode == "obs only" else (obs, {})

    def step(self, action: int) -> tuple:
        self.t, self.steps = self.t + 1, self.steps + 1
        if self.mode == "step raises" and self.steps == self.raise_at:
            raise RuntimeError("the simulator crashed")
        reward = np.array([1.0, 2.0]) if self.mode == "array reward" else 1.0
        ends = self.mode != "never ends" and self.t >= 10
        return np.zeros(2, np.float32), reward, ends, False, {}


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------- env errors name the env


@pytest.mark.parametrize("seed", [0, 1])
def test_an_env_whose_step_raises_is_named_with_step_index_and_what_is_kept(
    tmp_path: Path, seed: int
) -> None:
    """The env raises on its 7th step (update 1, before any checkpoint): an ``EnvError``
    naming the env, step(), the env index and that no checkpoint exists; and no stub run
    directory is left."""
    with pytest.raises(rl.EnvError) as err:
        rl.Agent(lambda: Broken("step raises"), seed=seed, out=str(tmp_path), **TINY).learn()
    message = _one_line(err.value)
    for part in (
        "Broken",
        "RuntimeError: the simulator crashed",
        "step()",
        "env index 0",
        "update 1",
        "no checkpoint",
    ):
        assert part in message, (part, message)
    assert list(tmp_path.iterdir()) == []  # no config.json + metrics.csv stub


def test_an_env_that_raises_after_a_checkpoint_names_the_checkpoint_kept(tmp_path: Path) -> None:
    """Raising on env 0's 40th step, checkpoints every update: the message names the update
    that failed and the checkpoint of the update before, which the run directory keeps."""
    agent = rl.Agent(
        lambda: Broken("step raises", raise_at=40),
        out=str(tmp_path),
        checkpoint_every=16,
        **{**TINY, "total_steps": 320},
    )
    with pytest.raises(rl.EnvError) as err:
        agent.learn()
    found = re.search(r"in update (\d+) .*the checkpoint of update (\d+)", _one_line(err.value))
    assert found, err.value
    failed, kept = int(found[1]), int(found[2])
    assert kept == failed - 1 >= 4
    (run_dir,) = tmp_path.iterdir()
    assert runs.load_checkpoint(run_dir / "checkpoint.pt")["counters"]["update"] == kept


@pytest.mark.parametrize(
    ("mode", "says"),
    [("array reward", "reward returned by `step()` must be"), ("obs only", "env.reset()")],
)
def test_a_custom_env_breaking_the_api_is_one_line_before_anything_is_written(
    tmp_path: Path, mode: str, says: str
) -> None:
    """Gymnasium's env_checker runs on custom envs before training: its finding is one line
    naming the env (today: numpy's or gymnasium's internals fail mid-rollout)."""
    with pytest.raises(rl.EnvError) as err:
        rl.Agent(lambda: Broken(mode), out=str(tmp_path), **TINY).learn()
    message = _one_line(err.value)
    assert message.startswith("env: Broken") and says in message, message
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_a_multidiscrete_with_a_zero_names_the_env() -> None:
    class ZeroChoices(Broken):
        def __init__(self) -> None:
            super().__init__()
            self.action_space = gym.spaces.MultiDiscrete([3, 0])

    with pytest.raises((rl.EnvError, ValueError)) as err:
        rl.Agent(ZeroChoices, **TINY)
    message = _one_line(err.value)
    assert "env" in message and "ZeroChoices" in message and "positive" in message, message


def test_env_checker_warnings_are_shown_once(recwarn: pytest.WarningsRecorder) -> None:
    class Loose(Broken):
        def step(self, action: int) -> tuple:
            obs, reward, terminated, truncated, info = super().step(action)
            return obs, reward, int(terminated), truncated, info  # an int, not a bool

    for _ in range(3):
        rl.Agent(Loose, **TINY)
    said = [str(w.message) for w in recwarn if "env_checker" in str(w.message)]
    assert said and len(said) == len(set(said)), said


# ------------------------------------------------------------------- no unbounded wait


def test_evaluation_of_an_env_that_never_ends_is_bounded_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No TimeLimit and no spec: the evaluation stops at the documented default bound with
    one warning line, instead of looping for ever (the bound lowered to keep the test fast)."""
    from logtrick.rl import env_checks

    assert env_checks.DEFAULT_EPISODE_STEPS == 10_000  # the documented default
    monkeypatch.setattr(env_checks, "DEFAULT_EPISODE_STEPS", DEFAULT_EPISODE_STEPS := 500)
    agent = rl.Agent(lambda: Broken("never ends"), **TINY)
    with pytest.warns(UserWarning, match=f"had not ended after {DEFAULT_EPISODE_STEPS:,}"):
        mean, _ = agent.evaluate(episodes=2)
    assert mean == DEFAULT_EPISODE_STEPS


def test_evaluation_keeps_the_env_own_time_limit() -> None:
    agent = rl.Agent(lambda: TimeLimit(Broken("never ends"), 37), **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching the env's own limit is no warning
        mean, _ = agent.evaluate(episodes=2)
    assert mean == 37


# --------------------------------------------------------- arguments named, one line


@pytest.mark.parametrize("seed", [-1, 2**64, 2**63])
def test_a_seed_outside_the_generators_range_names_seed(seed: int) -> None:
    with pytest.raises(ValueError, match=r"^seed: .*2\*\*63"):
        rl.Agent("CartPole-v1", seed=seed, **TINY)


def test_evaluate_names_episodes_and_seed() -> None:
    agent = rl.Agent("CartPole-v1", **TINY)
    with pytest.raises(ValueError, match=r"^episodes: .*2\.5"):
        agent.evaluate(episodes=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^seed: .*-1"):
        agent.evaluate(episodes=2, seed=-1)
    with pytest.raises(ValueError, match=r"^seed"):
        rl.evaluate(agent.policy, "CartPole-v1", episodes=2, seed=-1)


@pytest.mark.parametrize("obs", [["a", "b", "c", "d"], "left", [None, 1.0, 2.0, 3.0]])
def test_predict_of_strings_names_obs(obs: object) -> None:
    with pytest.raises(TypeError, match=r"^obs: expected numbers"):
        rl.Agent("CartPole-v1", **TINY).predict(obs)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["compare", "--k", "nan"], "--k"),
        (["compare", "--k", "1", "inf"], "--k"),
        (["compare", "--problem", "bernoulli", "--target", "nan"], "--target"),
        (["compare", "--seed", "-1"], "--seed"),
        (["evaluate", "RUN", "--seed", "-1"], "--seed"),
        (["evaluate", "RUN", "--episodes", "0"], "--episodes"),
    ],
)
def test_cli_flags_are_named_in_one_line(
    args: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out", str(tmp_path)] if args[0] == "compare" else args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {flag}:" in err, err


# -------------------------------------------------------- messages say what happened


def test_target_return_zero_is_a_target_and_stops_the_run(tmp_path: Path) -> None:
    """``target_return=0``: every CartPole return is above 0, so the first evaluation solves it
    and the run stops there (before: 0 was read as "no target" and the run trained on)."""
    fields = {**TINY, "eval_every": 16, "total_steps": 160}
    config = rl.Config(
        env="CartPole-v1", out=str(tmp_path), target_return=0.0, eval_episodes=2, **fields
    )
    result = rl.train(config)
    assert result.solved_at_step == 16
    assert len(result.history) == 1


def test_the_solved_message_counts_the_episodes_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "train",
        "CartPole-v1",
        "--envs",
        "2",
        "--steps",
        "160",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--eval-every",
        "16",
        "--set",
        "target_return=0",
        "eval_episodes=2",
        "num_steps=8",
        "num_minibatches=1",
        "update_epochs=1",
        "tensorboard=False",
        "plot=False",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "solved: 2 deterministic episodes reached the target return at 16 steps" in out, out
    assert "20 deterministic" not in out


def test_resume_of_a_finished_run_says_so_and_what_steps_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = rl.train(rl.Config(env="CartPole-v1", out=str(tmp_path), **TINY)).run_dir
    rows = (run_dir / "metrics.csv").read_text()
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "--steps" in out and "total" in out, out
    assert (run_dir / "metrics.csv").read_text() == rows  # nothing trained, nothing dropped
    with pytest.warns(UserWarning, match="finished"):
        rl.train(resume=run_dir)
    shutil.rmtree(run_dir)


def test_the_finished_message_is_exact_about_an_annealed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = rl.Config(env="CartPole-v1", out=str(tmp_path), **{**TINY, "anneal_lr": True})
    run_dir = rl.train(config).run_dir
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "anneal" in out and "new run" in out, out
    assert math.isfinite(float((run_dir / "metrics.csv").read_text().splitlines()[-1][0]))


@pytest.mark.slow
def test_cli_evaluation_of_an_env_that_never_ends_warns_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registered env without a time limit: training evaluates with the default eval_every
    scaled down; the first evaluation ends at the documented bound with one warning line
    (``logtrick train: warning: ...``), and the run finishes with a checkpoint. Slow: two
    evaluations of 10,000 steps."""
    gym.register("LogtrickNeverEnds-v0", entry_point=lambda: Broken("never ends"))
    args = [
        "train",
        "LogtrickNeverEnds-v0",
        "--algo",
        "ppo",
        "--envs",
        "2",
        "--steps",
        "32",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--eval-every",
        "16",
        "--set",
        "eval_episodes=1",
        "num_steps=8",
        "num_minibatches=1",
        "update_epochs=1",
        "tensorboard=False",
        "plot=False",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "had not ended" in line]
    assert len(warned) == 1, err  # one line, once (the second evaluation says the same)
    assert all(w.startswith("logtrick train: warning: evaluate: 1 of 1 episodes") for w in warned)
    assert (tmp_path / "LogtrickNeverEnds-v0-ppo-0" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("mode", ["obs only", "step raises"])
def test_a_registered_env_that_breaks_is_named_in_training_and_evaluation(
    tmp_path: Path, mode: str
) -> None:
    """Registered ids are not run through env_checker; their failures at the first reset, in a
    rollout or in an evaluation are still one ``EnvError`` line naming the id and env index."""
    env_id = f"LogtrickBroken{mode.title().replace(' ', '')}-v0"
    gym.register(env_id, entry_point=lambda: Broken(mode, raise_at=3), max_episode_steps=50)
    with pytest.raises(rl.EnvError) as err:
        rl.Agent(env_id, out=str(tmp_path), **TINY).learn()
    assert _one_line(err.value).startswith(f"env: {env_id} raised") and "env index" in str(
        err.value
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(rl.EnvError, match=f"env: {env_id} raised .* in an evaluation"):
        rl.evaluate(rl.Agent(lambda: Broken(), **TINY).policy, env_id, episodes=2)
