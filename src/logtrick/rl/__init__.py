"""Policy-gradient reinforcement learning on Gymnasium: returns, rollouts, policies, losses, and
the trainer (``Agent``; ``train``, ``load``, ``evaluate``)."""

from logtrick.rl.agent import Agent, TrainResult, load, train
from logtrick.rl.checkpoint import load_config
from logtrick.rl.config import Config, preset
from logtrick.rl.envs import make_env
from logtrick.rl.errors import (
    CheckpointError,
    DivergenceError,
    EnvError,
    RunLockedError,
    UnsupportedSpaceError,
)
from logtrick.rl.loop import evaluate
from logtrick.rl.losses import entropy_bonus, ppo_clip_loss, reinforce_loss, value_loss
from logtrick.rl.npg import conjugate_gradient, fisher_vector_product, natural_gradient
from logtrick.rl.policies import ActorCritic
from logtrick.rl.presets import ALGOS, PRESETS
from logtrick.rl.returns import compute_gae, discounted_returns
from logtrick.rl.rollout import Collector, Rollout

__all__ = [
    "ALGOS",
    "PRESETS",
    "ActorCritic",
    "Agent",
    "CheckpointError",
    "Collector",
    "Config",
    "DivergenceError",
    "EnvError",
    "Rollout",
    "RunLockedError",
    "TrainResult",
    "UnsupportedSpaceError",
    "compute_gae",
    "conjugate_gradient",
    "discounted_returns",
    "entropy_bonus",
    "evaluate",
    "fisher_vector_product",
    "load",
    "load_config",
    "make_env",
    "natural_gradient",
    "ppo_clip_loss",
    "preset",
    "reinforce_loss",
    "train",
    "value_loss",
]
