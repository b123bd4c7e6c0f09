"""``logtrick evaluate RUN --video DIR``: one .mp4 per episode; clear errors when the env cannot
render frames or moviepy (the ``video`` extra) is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import registered  # noqa: F401  (registers the test environments)

from logtrick.cli import main
from logtrick.rl.errors import MissingExtraError
from logtrick.rl.policies import ActorCritic
from logtrick.rl.video import record_video

SMALL = ["--envs", "2", "--steps", "32", "--no-progress", "--eval-every", "0", "--set",
         "num_steps=8", "tensorboard=False", "plot=False"]  # fmt: skip

needs_moviepy = pytest.mark.skipif(
    importlib.util.find_spec("moviepy") is None, reason="moviepy (the video extra) not installed"
)


@pytest.mark.slow  # about 6 s: moviepy and ffmpeg
@needs_moviepy
def test_evaluate_video_writes_an_mp4_per_episode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "CartPole-v1", "--algo", "a2c", "--out", str(tmp_path), *SMALL]) == 0
    videos = tmp_path / "videos"
    run = str(tmp_path / "CartPole-v1-a2c-0")
    assert main(["evaluate", run, "--episodes", "1", "--video", str(videos)]) == 0
    files = sorted(videos.glob("*.mp4"))
    assert len(files) == 1 and files[0].stat().st_size > 1_000
    assert "1 videos in" in capsys.readouterr().out


@needs_moviepy
def test_an_env_without_rgb_array_rendering_is_a_clear_error(tmp_path: Path) -> None:
    policy = ActorCritic(*_spaces("LogtrickCounter-v0"))
    with pytest.raises(ValueError, match=r"LogtrickCounter-v0.*cannot render frames"):
        record_video(policy, "LogtrickCounter-v0", tmp_path)
    assert not tmp_path.joinpath("rl-video-episode-0.mp4").exists()


def test_missing_moviepy_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "moviepy" else real(name, *a)
    )
    policy = ActorCritic(*_spaces("CartPole-v1"))
    with pytest.raises(MissingExtraError, match=r"logtrick\[video\]"):
        record_video(policy, "CartPole-v1", tmp_path)


def _spaces(env_id: str) -> tuple:
    import gymnasium as gym

    env = gym.make(env_id)
    env.close()
    return env.observation_space, env.action_space


@needs_moviepy
def test_a_missing_renderer_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the env's renderer (pygame for classic control) recording is a one-line
    ``MissingExtraError`` naming the ``video`` extra, not gymnasium's raw error."""
    import gymnasium as gym
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    def no_pygame(self: CartPoleEnv) -> None:
        raise gym.error.DependencyNotInstalled("pygame is not installed")

    monkeypatch.setattr(CartPoleEnv, "render", no_pygame)
    policy = ActorCritic(*_spaces("CartPole-v1"))
    with pytest.raises(MissingExtraError, match=r"CartPole-v1.*logtrick\[video\]"):
        record_video(policy, "CartPole-v1", tmp_path)
