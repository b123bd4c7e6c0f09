"""``rl.Agent``: env id / instance / factory, callbacks, learn twice, predict, save/load, own
policies, and one configuration for Python and the command line."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from envs import CounterEnv
from gymnasium.wrappers import TimeLimit
from torch import nn
from torch.distributions import Categorical

from logtrick import rl
from logtrick.cli import build_parser, main, train_overrides
from logtrick.rl.runs import read_metrics

QUIET = {"progress": False, "tensorboard": False, "plot": False}
TINY = {"num_envs": 2, "num_steps": 16, "eval_every": 0, **QUIET}


def make_counter() -> gym.Env:
    """A factory: the counter env behind a 50-step time limit (not registered)."""
    return TimeLimit(CounterEnv(terminal=1_000), max_episode_steps=50)


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


@pytest.mark.parametrize("kind", ["id", "instance", "factory"])
def test_agent_learns_on_an_id_an_instance_and_a_factory(kind: str, tmp_path: Path) -> None:
    env = {"id": "CartPole-v1", "instance": gym.make("CartPole-v1"),
           "factory": lambda: gym.make("CartPole-v1")}[kind]  # fmt: skip
    agent = rl.Agent(env, algo="a2c", out=str(tmp_path), **TINY)
    agent.learn(128)
    assert agent.history[-1]["global_step"] == 128
    config = rl.load_config(agent.run_dir)  # readable, JSON
    if kind == "id":
        assert config.env == "CartPole-v1"
    else:  # where the instance's class or the factory comes from
        assert config.env.startswith(
            "custom:test_agent."
            if kind == "factory"
            else "custom:gymnasium.envs.classic_control.cartpole.CartPoleEnv"
        )
    mean, std = agent.evaluate(episodes=3)
    assert mean > 0 and std >= 0


def test_custom_env_run_loads_only_with_env_and_says_so(tmp_path: Path) -> None:
    """A factory-made run: a new process cannot rebuild the env, so loading asks for it."""
    agent = rl.Agent(make_counter, algo="ppo", out=str(tmp_path), **TINY).learn(64)
    agent.save(tmp_path / "agent.pt")
    code = textwrap.dedent(f"""
        import sys
        from logtrick import rl
        for load in (lambda: rl.Agent.load({str(tmp_path / "agent.pt")!r}),
                     lambda: rl.load({str(agent.run_dir)!r})):
            try:
                load()
            except ValueError as err:
                print("ValueError:", err)
    """)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out
    for line in lines:
        assert "env=" in line and "make_counter" in line, line
    again = rl.Agent.load(tmp_path / "agent.pt", env=make_counter)
    obs = np.arange(5, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(again.predict(obs), agent.predict(obs))


def test_bad_factory_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="factory"):
        rl.Agent(lambda: "not an env", out=str(tmp_path), **TINY)
    with pytest.raises(TypeError, match=r"total_step\b.*did you mean total_steps"):
        rl.Agent("CartPole-v1", total_step=1_000)
    assert _files(tmp_path) == []


def test_callback_stops_and_sees_every_update(tmp_path: Path) -> None:
    seen: list[dict] = []

    def callback(metrics: dict) -> bool:
        seen.append(metrics)
        return metrics["update"] >= 3

    agent = rl.Agent("CartPole-v1", algo="ppo", out=str(tmp_path), **TINY)
    agent.learn(10_000, callback=callback)
    assert [m["update"] for m in seen] == [1, 2, 3]
    assert agent.history[-1]["global_step"] == 3 * 32
    state = torch.load(agent.run_dir / "checkpoint.pt", weights_only=True)
    assert state["counters"]["update"] == 3  # a checkpoint at the stop


def test_callback_sees_evaluations(tmp_path: Path) -> None:
    evals: list[float] = []
    agent = rl.Agent("CartPole-v1", algo="a2c", out=str(tmp_path),
                     **{**TINY, "eval_every": 64, "eval_episodes": 2})  # fmt: skip
    agent.learn(128, callback=lambda m: evals.append(m["eval_return"]))
    assert np.isfinite(evals).sum() == 2  # at 64 and 128 steps


def test_learn_twice_continues_the_run(tmp_path: Path) -> None:
    """Two calls of 4 updates equal one of 8 with the same schedule: same optimizer, the
    learning rate continuing (anneal_lr off: the first call's budget is its own)."""
    kwargs = dict(algo="ppo", anneal_lr=False, **TINY)
    once = rl.Agent("CartPole-v1", out=str(tmp_path / "a"), **kwargs).learn(256)
    twice = rl.Agent("CartPole-v1", out=str(tmp_path / "b"), **kwargs).learn(128).learn(128)
    assert twice.run_dir.parent == tmp_path / "b" and len(list((tmp_path / "b").iterdir())) == 1
    assert [r["global_step"] for r in twice.history] == [32 * (i + 1) for i in range(8)]
    assert twice.learner.optimizer.state_dict()["state"][0]["step"] == 8 * 20  # 20 epochs
    for a, b in zip(once.history[:4], twice.history[:4]):
        assert a["policy_loss"] == b["policy_loss"]
    assert len(read_metrics(twice.run_dir / "metrics.csv")) == 8


def test_learn_twice_extends_the_lr_schedule(tmp_path: Path) -> None:
    agent = rl.Agent("CartPole-v1", algo="a2c", out=str(tmp_path), **TINY)
    agent.learn(320, callback=lambda m: m["update"] >= 5)  # stopped halfway: lr at half
    agent.learn(160)
    lrs = [r["lr"] for r in agent.history]
    assert all(b < a for a, b in itertools.pairwise(lrs)), lrs


@pytest.mark.parametrize(
    ("env", "single", "dtype"),
    [("CartPole-v1", (), np.int64), ("Pendulum-v1", (1,), np.float32)],
)
def test_predict_single_and_batch(env: str, single: tuple, dtype: type, tmp_path: Path) -> None:
    agent = rl.Agent(env, algo="ppo", out=str(tmp_path), **TINY)
    space = gym.make(env).observation_space
    obs = np.stack([space.sample() for _ in range(5)])
    batch = agent.predict(obs)
    assert isinstance(batch, np.ndarray) and batch.shape == (5, *single) and batch.dtype == dtype
    one = agent.predict(obs[0])
    assert one.shape == single and one.dtype == dtype
    np.testing.assert_allclose(one, batch[0], rtol=1e-5)  # a batch may round differently
    with pytest.raises(ValueError, match="obs"):
        agent.predict(np.zeros((5, 7)))


def test_save_load_round_trip_predicts_the_same(tmp_path: Path) -> None:
    agent = rl.Agent("Pendulum-v1", algo="ppo", out=str(tmp_path), **TINY).learn(64)
    agent.save(tmp_path / "agent.pt")
    loaded = rl.Agent.load(tmp_path / "agent.pt")
    obs = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    assert loaded.config == agent.config
    assert loaded.counters.global_step == 64
    with pytest.raises(rl.CheckpointError, match="agent"):
        rl.Agent.load(agent.run_dir / "checkpoint.pt")


def test_predict_refuses_a_nan_observation_and_save_takes_a_file_path(tmp_path: Path) -> None:
    """``predict`` acted on a NaN observation without a word, and ``save`` raised bare
    FileNotFoundError / IsADirectoryError. Now: a NaN observation is an error naming ``obs``;
    ``save`` creates missing parent directories and refuses a directory, naming ``path``."""
    agent = rl.Agent("CartPole-v1", algo="ppo", out=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match=r"obs: 1 of 4 entries are NaN or inf"):
        agent.predict(np.array([0.0, np.nan, 0.0, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"obs: .*NaN or inf"):
        agent.predict(np.full((3, 4), np.inf, np.float32))
    nested = tmp_path / "new" / "dirs" / "agent.pt"
    agent.save(nested)
    assert rl.Agent.load(nested).config == agent.config
    with pytest.raises(ValueError, match=r"path: .* is a directory; expected a file path"):
        agent.save(tmp_path)


class TinyPolicy(nn.Module):
    """A user's own network: ``distribution(obs)`` and ``value(obs)``."""

    def __init__(self) -> None:
        super().__init__()
        self.pi, self.v = nn.Linear(4, 2), nn.Linear(4, 1)

    def distribution(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.pi(obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(obs).squeeze(-1)


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_own_policy_trains_saves_and_loads(algo: str, tmp_path: Path) -> None:
    net = TinyPolicy()
    before = [p.detach().clone() for p in net.parameters()]
    agent = rl.Agent("CartPole-v1", algo=algo, policy=net, out=str(tmp_path), **TINY).learn(128)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert agent.predict(np.zeros(4, dtype=np.float32)).shape == ()
    agent.save(tmp_path / "agent.pt")
    with pytest.raises(ValueError, match="policy"):
        rl.Agent.load(tmp_path / "agent.pt")
    loaded = rl.Agent.load(tmp_path / "agent.pt", policy=TinyPolicy())
    obs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))


def test_own_policy_is_checked_up_front(tmp_path: Path) -> None:
    class NoValue(nn.Module):
        def distribution(self, obs: torch.Tensor) -> Categorical:
            return Categorical(logits=torch.zeros(obs.shape[0], 2))

    class WrongShape(TinyPolicy):
        def value(self, obs: torch.Tensor) -> torch.Tensor:
            return self.v(obs)  # (N, 1)

    with pytest.raises(TypeError, match="value"):
        rl.Agent("CartPole-v1", "ppo", policy=NoValue(), out=str(tmp_path), **TINY)
    with pytest.raises(ValueError, match=r"value\(obs\).*\(2,\)"):
        rl.Agent("CartPole-v1", "ppo", policy=WrongShape(), out=str(tmp_path), **TINY)
    with pytest.raises(TypeError, match="actor_parameters"):
        rl.Agent("CartPole-v1", algo="npg", policy=TinyPolicy(), out=str(tmp_path), **TINY)
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["CartPole-v1", "--algo", "reinforce"],
        ["Acrobot-v1", "--steps", "1e5", "--seed", "3", "--set", "lr=1e-3"],
        ["Pendulum-v1", "--envs", "4"],
        ["MountainCar-v0", "--algo", "a2c", "--no-stop", "--eval-every", "0"],
        [],
    ],
)
def test_python_config_equals_the_cli_config(argv: list[str]) -> None:
    """``rl.Config(**fields)`` from Python is what ``logtrick train`` runs for the same
    arguments: the presets (or the space-derived defaults) apply to both."""
    args = build_parser().parse_args(["train", *argv])
    fields = train_overrides(args)
    cli = rl.Config(**fields)
    assert cli == rl.preset(fields.pop("env", "CartPole-v1"), fields.pop("algo", None), **fields)
    assert rl.Agent(cli.env, cli.algo, **{k: v for k, v in cli.to_dict().items()
                                           if k not in ("env", "algo")}).config == cli  # fmt: skip


def test_bare_config_applies_the_presets() -> None:
    """The README's ``rl.Config(env="CartPole-v1", algo="reinforce")`` is the tuned preset
    (before: Config's generic defaults, which do not solve CartPole)."""
    config = rl.Config(env="CartPole-v1", algo="reinforce", total_steps=200_000, seed=0)
    row = {**rl.PRESETS["CartPole-v1"]["*"], **rl.PRESETS["CartPole-v1"]["reinforce"]}
    for name, value in row.items():
        if name != "total_steps":
            assert getattr(config, name) == value, name
    assert config.eval_every > 0 and config.stop_at_threshold


def test_every_field_doc_is_in_help_config_and_the_field_names_in_train_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The full reference lives in help(rl.Config) and the RL guide (test_config); ``logtrick
    train --help`` names every field that ``--set`` takes."""
    from logtrick.rl.config import FIELD_DOCS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    doc = " ".join((rl.Config.__doc__ or "").split())
    assert len(FIELD_DOCS) == len(rl.Config.__dataclass_fields__)
    for name, text in FIELD_DOCS.items():
        assert name in out, name
        assert text in doc, name
