"""Record a policy's episodes as videos (``logtrick evaluate RUN --video DIR``).

Gymnasium's ``RecordVideo`` wrapper renders every frame (``render_mode="rgb_array"``) and writes
one ``.mp4`` per episode with moviepy, which the ``video`` extra installs
(``pip install logtrick[video]``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.wrappers import RecordVideo

from logtrick.checks import check_positive_int
from logtrick.rl.env_checks import episode_step_limit
from logtrick.rl.envs import check_env_id
from logtrick.rl.errors import MissingExtraError

__all__ = ["record_video"]


def _check_can_record(env_id: str) -> None:
    """``MissingExtraError`` without moviepy, ``ValueError`` if ``env_id`` cannot render frames."""
    if importlib.util.find_spec("moviepy") is None:
        raise MissingExtraError(
            "video: recording needs moviepy; install it with `pip install logtrick[video]`"
        )
    check_env_id("env", env_id)
    env = gym.make(env_id)
    modes = list(env.metadata.get("render_modes") or [])
    env.close()
    if "rgb_array" not in modes:
        raise ValueError(
            f"video: env {env_id!r} cannot render frames (render_modes {modes}, "
            "expected 'rgb_array'); it cannot be recorded"
        )


def record_video(
    policy: Any,
    env_id: str,
    directory: str | Path,
    episodes: int = 1,
    seed: int = 0,
    deterministic: bool = True,
) -> list[Path]:
    """Run ``episodes`` episodes of ``policy`` on ``env_id`` and write one ``.mp4`` each.

    Args:
        policy: anything with ``act(obs, deterministic, action_mask)`` (an
            :class:`~logtrick.rl.policies.ActorCritic`); masks come from ``info``.
        env_id: a registered environment id whose env supports ``render_mode="rgb_array"``.
        directory: where the videos go (created if missing).
        episodes: number of episodes (reset seeds ``seed``, ``seed + 1``, ...).
        seed: reset seed of the first episode.
        deterministic: the mode of the policy rather than a sample.

    Returns:
        The video files written, sorted.

    Raises:
        MissingExtraError: moviepy, or the env's renderer (pygame for classic control), is not
            installed (the ``video`` extra).
        ValueError: the env cannot render ``rgb_array`` frames, or a bad argument.
    """
    check_positive_int("episodes", episodes)
    _check_can_record(env_id)
    directory = Path(directory)
    env = RecordVideo(
        gym.make(env_id, render_mode="rgb_array"),
        str(directory),
        episode_trigger=lambda _: True,
        disable_logger=True,
    )
    try:
        limit, _ = episode_step_limit(env_id)
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            for _ in range(limit):  # an env that never ends is cut, not recorded for ever
                action = policy.act(obs, deterministic, info.get("action_mask"))
                step = action.item() if action.ndim == 0 else action  # Taxi wants an int
                obs, _, terminated, truncated, info = env.step(step)
                if terminated or truncated:
                    break
    except gym.error.DependencyNotInstalled as err:  # the renderer (pygame, mujoco, box2d)
        raise MissingExtraError(
            f"video: {env_id} cannot render without a package it needs ({err}); the `video` "
            "extra installs the classic-control renderer: `pip install logtrick[video]`"
        ) from None
    finally:
        env.close()
    return sorted(directory.glob("*.mp4"))
