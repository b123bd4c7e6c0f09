"""Training configuration and per-environment presets.

``Config`` is one frozen dataclass, a docstring under every field; values derived from others are
properties. ``PRESETS`` is the table of per-environment defaults, shown by ``logtrick presets``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALGOS", "DEFAULT_ALGOS", "PRESETS", "Config", "default_algo", "preset"]

ALGOS = ("reinforce", "a2c", "ppo", "npg")


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run. Same config + same seed = same learning curve."""

    env: str = "CartPole-v1"
    """Gymnasium environment id."""
    algo: str = "ppo"
    """One of ``reinforce``, ``a2c``, ``ppo``, ``npg``."""
    total_steps: int = 200_000
    """Budget of environment steps (summed over the parallel envs)."""
    seed: int = 0
    """Seeds torch, the environments' resets and the evaluation episodes."""
    num_envs: int = 8
    """Parallel environments in the vector env."""
    num_steps: int = 128
    """Steps per environment per rollout; a rollout has ``num_envs * num_steps`` transitions."""
    vectorization_mode: str = "sync"
    """``sync`` (one process) or ``async`` (a process per env; for slow envs)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE λ (a2c, ppo, npg); 1.0 is Monte Carlo advantages."""
    lr: float = 3e-4
    """Adam learning rate (of the policy and critic; npg: of the critic only)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over ``total_steps``."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the actor and critic MLPs."""
    activation: str = "tanh"
    """Hidden activation: ``tanh`` or ``relu``."""
    normalize_obs: bool = False
    """Normalise observations by a running mean and variance (saved with the policy)."""
    normalize_rewards: bool = False
    """Divide rewards by a running std of the discounted return (value targets on a sane scale)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies (Box actions)."""
    baseline: str = "value"
    """reinforce only: ``none``, ``mean`` (batch mean of returns) or ``value`` (learned critic)."""
    normalize_advantages: bool = True
    """Standardise advantages over each (mini)batch."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Weight of the value loss in the combined loss."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this (``inf`` disables)."""
    update_epochs: int = 4
    """ppo: passes over each rollout; npg: critic epochs."""
    num_minibatches: int = 4
    """ppo / npg critic: minibatches per epoch."""
    clip_eps: float = 0.2
    """ppo: clipping range of the probability ratio."""
    clip_value: float | None = None
    """ppo: clipping range of the value update (``None``: no value clipping)."""
    target_kl: float | None = None
    """ppo: stop the epochs of an update early when approx-KL exceeds this (``None``: never)."""
    max_kl: float = 0.01
    """npg: KL trust region δ of each natural-gradient step."""
    cg_iters: int = 10
    """npg: conjugate-gradient iterations."""
    cg_damping: float = 0.1
    """npg: damping added to the Fisher-vector product."""
    line_search: bool = True
    """npg: backtracking line search on surrogate and KL (TRPO); ``False`` is plain NPG."""
    eval_every: int = 0
    """Evaluate the deterministic policy every this many env steps (0: never)."""
    eval_episodes: int = 20
    """Episodes per evaluation (fixed reset seeds)."""
    stop_at_threshold: bool = False
    """Stop once an evaluation reaches ``target_return`` (or the env's reward threshold)."""
    target_return: float | None = None
    """Return that counts as solved; ``None`` uses the env spec's ``reward_threshold``."""
    checkpoint_every: int = 50_000
    """Write a checkpoint every this many env steps (rounded up to whole rollouts), and at the end.
    Environments are reset at every checkpoint with seeds derived from (seed, update), so that a
    run resumed from one continues exactly as an uninterrupted run does."""
    out: str = "runs"
    """Parent directory of the run directory."""
    run_name: str | None = None
    """Name of the run directory; ``None`` gives ``{env}-{algo}-{seed}``."""
    tensorboard: bool = True
    """Write TensorBoard events when ``tensorboard`` is installed."""
    torch_threads: int = 1
    """``torch.set_num_threads`` for the run; small networks are fastest single-threaded."""
    progress: bool = True
    """Show a rich progress bar."""
    plot: bool = True
    """Draw the learning curve (``curve.png`` in the run directory) at the end of the run."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the config (not used by training)."""

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo: expected one of {ALGOS}, got {self.algo!r}")
        if self.baseline not in ("none", "mean", "value"):
            raise ValueError(f"baseline: expected 'none', 'mean' or 'value', got {self.baseline!r}")
        for name in ("total_steps", "num_envs", "num_steps", "update_epochs", "num_minibatches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(
                f"gamma, gae_lambda: expected values in [0, 1], got {self.gamma}, {self.gae_lambda}"
            )
        if self.vectorization_mode not in ("sync", "async"):
            raise ValueError(
                f"vectorization_mode: expected 'sync' or 'async', got {self.vectorization_mode!r}"
            )
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"num_minibatches: {self.num_minibatches} does not divide the batch "
                f"num_envs * num_steps = {self.batch_size}"
            )

    @property
    def batch_size(self) -> int:
        """Transitions per rollout."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Rollouts (and updates) in the budget, rounded up."""
        return -(-self.total_steps // self.batch_size)

    @property
    def checkpoint_interval(self) -> int:
        """Updates between checkpoints."""
        return max(1, -(-self.checkpoint_every // self.batch_size))

    @property
    def uses_critic(self) -> bool:
        return self.algo != "reinforce" or self.baseline == "value"

    @property
    def name(self) -> str:
        return self.run_name or f"{self.env}-{self.algo}-{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config: unknown fields {sorted(unknown)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


# Per-environment defaults: env -> algo -> overrides of Config's defaults. "*" applies to every
# algorithm of that env; an algorithm's own row wins. Measured in BENCHMARKS.md.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "CartPole-v1": {
        "*": {"total_steps": 200_000, "gamma": 0.98},
        "ppo": {"num_envs": 8, "num_steps": 32, "num_minibatches": 1, "update_epochs": 20,
                "lr": 1e-3, "gae_lambda": 0.8, "ent_coef": 0.0},
        "a2c": {"num_envs": 8, "num_steps": 5, "num_minibatches": 1, "lr": 1e-3,
                "gae_lambda": 1.0, "ent_coef": 0.0},
        "reinforce": {"num_envs": 8, "num_steps": 256, "num_minibatches": 1, "lr": 3e-3,
                      "baseline": "value", "gamma": 0.99},
        "npg": {"num_envs": 8, "num_steps": 128, "num_minibatches": 2, "max_kl": 0.015,
                "lr": 1e-2, "update_epochs": 3, "gamma": 0.99},
    },
    "Acrobot-v1": {
        "*": {"total_steps": 500_000, "normalize_obs": True, "normalize_rewards": True},
        "ppo": {"num_envs": 16, "num_steps": 32, "num_minibatches": 1, "update_epochs": 4,
                "lr": 2e-3, "gae_lambda": 0.94, "ent_coef": 0.0},
        "a2c": {"num_envs": 16, "num_steps": 5, "num_minibatches": 1, "lr": 1e-3,
                "ent_coef": 0.0},
        "reinforce": {"num_envs": 16, "num_steps": 256, "num_minibatches": 1, "lr": 3e-3},
        "npg": {"num_envs": 16, "num_steps": 256, "num_minibatches": 4, "max_kl": 0.02},
    },
    "LunarLander-v3": {
        "*": {"total_steps": 1_000_000, "gamma": 0.999, "gae_lambda": 0.98,
              "normalize_rewards": True},
        "ppo": {"num_envs": 16, "num_steps": 256, "num_minibatches": 8, "update_epochs": 4,
                "lr": 1e-3, "ent_coef": 0.01, "activation": "relu"},
        "a2c": {"num_envs": 16, "num_steps": 8, "num_minibatches": 1, "lr": 7e-4,
                "ent_coef": 0.0, "gae_lambda": 0.95},
        "reinforce": {"num_envs": 16, "num_steps": 512, "num_minibatches": 1, "lr": 1e-3},
        "npg": {"num_envs": 16, "num_steps": 512, "num_minibatches": 8, "max_kl": 0.02},
    },
    "Pendulum-v1": {
        "*": {"total_steps": 300_000, "normalize_obs": True, "normalize_rewards": True,
              "gamma": 0.9, "gae_lambda": 0.95},
        "ppo": {"num_envs": 8, "num_steps": 256, "num_minibatches": 4, "update_epochs": 20,
                "lr": 1e-3, "clip_eps": 0.2, "log_std_init": 0.0, "activation": "relu"},
        "a2c": {"num_envs": 8, "num_steps": 8, "num_minibatches": 1, "lr": 7e-4},
        "reinforce": {"num_envs": 8, "num_steps": 200, "num_minibatches": 1, "lr": 1e-3},
        "npg": {"num_envs": 8, "num_steps": 256, "num_minibatches": 8, "max_kl": 0.02},
    },
    "MountainCarContinuous-v0": {
        "*": {"total_steps": 300_000, "normalize_obs": True, "gamma": 0.99},
        "ppo": {"num_envs": 8, "num_steps": 256, "num_minibatches": 8, "update_epochs": 10,
                "lr": 3e-4, "ent_coef": 0.0, "log_std_init": 0.0},
        "a2c": {"num_envs": 8, "num_steps": 8, "num_minibatches": 1, "lr": 7e-4},
        "reinforce": {"num_envs": 8, "num_steps": 1000, "num_minibatches": 1, "lr": 1e-3},
        "npg": {"num_envs": 8, "num_steps": 512, "num_minibatches": 8, "max_kl": 0.02},
    },
}  # fmt: skip

DEFAULT_ALGOS: dict[str, str] = {"CartPole-v1": "npg"}
"""The algorithm ``preset(env)`` picks when none is named: the fastest robust one measured on
``env`` (BENCHMARKS.md, RL suite); ``ppo`` for every other env."""


def default_algo(env: str) -> str:
    """The algorithm used for ``env`` when none is named."""
    return DEFAULT_ALGOS.get(env, "ppo")


def preset(env: str = "CartPole-v1", algo: str | None = None, **overrides: Any) -> Config:
    """``Config`` for ``env``/``algo``: its ``PRESETS`` row, or for an env without one the
    defaults chosen from its spaces and time limit (:func:`logtrick.rl.defaults.default_overrides`),
    with ``overrides`` applied last. ``algo=None`` is :func:`default_algo` of ``env``."""
    algo = default_algo(env) if algo is None else algo
    if env in PRESETS:
        table = PRESETS[env]
        base = {**table.get("*", {}), **table.get(algo, {})}
    else:
        from logtrick.rl.defaults import default_overrides

        base = default_overrides(env, algo)
    return Config(env=env, algo=algo, **{**base, **overrides})
