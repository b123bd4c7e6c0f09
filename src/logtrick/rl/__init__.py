"""Policy-gradient reinforcement learning on Gymnasium: returns, rollouts, policies, losses, and
the trainer (``Agent``; ``train``, ``load``, ``evaluate``)."""

from logtrick.rl.agent import Agent, load
from logtrick.rl.config import ALGOS, PRESETS, Config, preset
from logtrick.rl.errors import (
    CheckpointError,
    DivergenceError,
    MissingExtraError,
    RunLockedError,
    UnsupportedSpaceError,
)
from logtrick.rl.loop import TrainResult, evaluate, load_config, train
from logtrick.rl.losses import (
    conjugate_gradient,
    entropy_bonus,
    fisher_vector_product,
    ppo_clip_loss,
    reinforce_loss,
    value_loss,
)
from logtrick.rl.npg import natural_gradient
from logtrick.rl.policies import ActorCritic
from logtrick.rl.returns import compute_gae, discounted_returns
from logtrick.rl.rollout import Collector, Rollout, make_env

__all__ = [
    "ALGOS",
    "PRESETS",
    "ActorCritic",
    "Agent",
    "CheckpointError",
    "Collector",
    "Config",
    "DivergenceError",
    "MissingExtraError",
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
