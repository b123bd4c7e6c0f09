"""What a run records: the policy gradient's signal-to-noise ratio, TensorBoard's hparams, the
learning curve with evaluations and the threshold; tensorboard is a normal dependency."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import gymnasium as gym
import matplotlib.figure
import pytest
import torch

from logtrick import rl
from logtrick.rl.build import make_learner
from logtrick.rl.learner import gradient_snr
from logtrick.rl.runs import plot_learning_curve, read_metrics

ROOT = Path(__file__).resolve().parents[2]
QUIET = {"progress": False, "plot": False, "eval_every": 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_snr_equals_its_definition(seed: int) -> None:
    """From running sums, as the brute-force formula on the K gradients themselves."""
    g = torch.randn(5, 40, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g += torch.linspace(-1, 1, 40, dtype=torch.float64)  # a mean to stand out of the noise
    mean = g.mean(0)
    expected = mean.norm() / (g - mean).square().sum(1).mean().sqrt()
    got = gradient_snr(g.sum(0), g.square().sum(), torch.tensor(5.0, dtype=torch.float64))
    torch.testing.assert_close(got, expected)
    assert math.isnan(float(gradient_snr(g[0], g[0].square().sum(), torch.tensor(1.0))))


def test_learner_records_the_snr_of_the_recorded_steps_in_one_sync() -> None:
    """Losses linear in the parameters have known gradients c_i; the Learner's grad_snr is
    the SNR of the recorded ones only (the unrecorded step is left out)."""
    envs = rl.make_env("CartPole-v1")
    learner = make_learner(rl.Config(algo="ppo", max_grad_norm=0.1), envs)
    envs.close()
    actor = learner.actor_params
    size = sum(p.numel() for p in actor)
    coefs = torch.randn(4, size, generator=torch.Generator().manual_seed(0))
    learner.begin()
    for i, c in enumerate(coefs):
        loss = torch.cat([p.reshape(-1) for p in actor]) @ c
        learner.step(loss, record_gradient=i < 3)
    info = learner.finish({})
    g = coefs[:3]
    expected = g.mean(0).norm() / (g - g.mean(0)).square().sum(1).mean().sqrt()
    assert info["grad_snr"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(("algo", "minibatches"), [("ppo", 4), ("ppo", 1), ("a2c", 1)])
def test_metrics_record_the_snr_each_ppo_update(
    algo: str, minibatches: int, tmp_path: Path
) -> None:
    agent = rl.Agent("CartPole-v1", algo, num_envs=2, num_steps=32, num_minibatches=minibatches,
                     tensorboard=False, out=str(tmp_path), **QUIET).learn(192)  # fmt: skip
    rows = read_metrics(agent.run_dir / "metrics.csv")
    if algo != "ppo" or minibatches == 1:  # one policy step per epoch: no spread to measure
        assert "grad_snr" not in rows[0]
        return
    snr = [float(r["grad_snr"]) for r in rows]
    assert len(snr) == 3
    assert all(0 < s < math.inf for s in snr), snr


def test_tensorboard_logs_hparams_and_the_snr(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = rl.Agent("CartPole-v1", "ppo", num_envs=2, num_steps=32, num_minibatches=4,
                     lr=1e-3, tensorboard=True, out=str(tmp_path), **QUIET).learn(64)  # fmt: skip
    events = EventAccumulator(str(agent.run_dir / "tensorboard"))
    events.Reload()
    assert "grad_snr" in events.Tags()["scalars"]
    content = events.PluginTagToContent("hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(1e-3)
    assert hparams["algo"].string_value == "ppo"
    assert hparams["hidden"].string_value == "[64, 64]"


def test_learning_curve_shows_evaluations_and_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curve the trainer draws holds the training return, the evaluations (above it, as
    when a run is solved) and the env's reward threshold."""
    figures: list[matplotlib.figure.Figure] = []
    original = matplotlib.figure.Figure.savefig

    def keep(self: matplotlib.figure.Figure, *args: object, **kwargs: object) -> None:
        figures.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    rows = [{"global_step": 100 * i, "time": i, "episode_return": 20 + i,
             "eval_return": 480.0 if i == 3 else math.nan} for i in range(1, 5)]  # fmt: skip
    plot_learning_curve(rows, tmp_path / "curve.png", threshold=475.0)
    ax = figures[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    evaluation = next(v for k, v in lines.items() if k.startswith("evaluation"))
    assert list(evaluation.get_ydata()) == [480.0]
    threshold = next(v for k, v in lines.items() if k.startswith("threshold"))
    assert set(threshold.get_ydata()) == {475.0}
    assert max(ax.get_ylim()) >= 480.0
    agent = rl.Agent("CartPole-v1", "a2c", num_envs=2, num_steps=16, eval_every=32,
                     eval_episodes=2, progress=False, tensorboard=False,
                     out=str(tmp_path))  # fmt: skip
    figures.clear()
    agent.learn(64)
    labels = [line.get_label() for line in figures[0].axes[0].get_lines()]
    assert any(label.startswith("evaluation") for label in labels)
    assert "threshold 475" in labels  # read from the env's spec
    assert gym.spec("CartPole-v1").reward_threshold == 475.0


def test_tensorboard_is_a_normal_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "tensorboard" in [d.split(">")[0].split(" ")[0] for d in project["dependencies"]]
