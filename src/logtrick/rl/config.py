"""Training configuration and per-environment presets.

``Config`` is one frozen dataclass, a docstring under every field; values derived from others are
properties. Every field is checked (type and range) when a ``Config`` is made, before anything is
created: the check of each field is one entry of ``FIELD_CHECKS`` (functions of
:mod:`logtrick.checks`). :func:`parse_field` reads a command-line value (``--set lr=1e-3``) as
its field's declared type. ``PRESETS`` is the table of per-environment defaults, shown by
``logtrick presets``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from logtrick import checks
from logtrick.rl.policies import ACTIVATIONS

__all__ = [
    "ALGOS",
    "DEFAULT_ALGOS",
    "FIELD_CHECKS",
    "PRESETS",
    "RESUME_FIELDS",
    "Config",
    "default_algo",
    "parse_field",
    "preset",
]

ALGOS = ("reinforce", "a2c", "ppo", "npg")
RESUME_FIELDS = (
    "total_steps", "stop_at_threshold", "eval_every", "eval_episodes", "target_return",
    "checkpoint_every", "progress", "plot", "tensorboard",
    "workers", "ray_address", "device",
)  # fmt: skip
"""Fields a resumed run may change: when it stops, evaluates and checkpoints, and what it shows.
Every other field defines what is learned and must equal the saved config."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run. Same config + same seed = same learning curve."""

    env: str = "CartPole-v1"
    """Gymnasium environment id: what ``gymnasium.make`` accepts (``"ns/Env-v0"``,
    ``"module:Env-v0"``)."""
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
    """Decay the learning rate linearly to zero at ``total_steps`` (a run extended on resume
    decays from the rate it had reached to zero at the new budget: it never rises)."""
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
    """reinforce only: ``none``, ``mean`` (batch mean of returns) or ``value`` (learned critic).
    Without a critic nothing can bootstrap an unfinished episode, so with ``none`` and ``mean``
    every rollout runs on until the episodes it began have ended (``whole_episodes``)."""
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
    """ppo / npg critic: minibatches per epoch; the valid transitions of a rollout are split
    evenly (sizes differ by at most one)."""
    clip_eps: float = 0.2
    """ppo: clipping range of the probability ratio."""
    clip_value: float | None = None
    """ppo: clipping range of the value update (``None``: no value clipping)."""
    target_kl: float | None = None
    """ppo: stop the epochs of an update after the first whose mean approx-KL exceeds this
    (``None``: never)."""
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
    Checkpoints leave the environments alone; a resumed run resets them with seeds derived from
    (seed, update), so resuming a checkpoint is deterministic."""
    out: str = "runs"
    """Parent directory of the run directory."""
    run_name: str | None = None
    """Name of the run directory; ``None`` gives ``{env}-{algo}-{seed}`` (characters other than
    letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``)."""
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
    workers: int = 0
    """Ray rollout workers (0: collect in this process). ``num_envs`` is the total: each worker
    steps ``num_envs / workers`` of them (must divide), so the update is the one of the
    in-process run with the same config (:mod:`logtrick.rl.workers`)."""
    ray_address: str | None = None
    """With ``workers``: the Ray cluster to join (``"auto"`` or ``"HOST:PORT"``); ``None`` starts
    a local runtime when none is running."""
    device: str = "cpu"
    """Where the learner runs: ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available);
    rollouts stay on the CPU."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, FIELD_CHECKS[f.name](f.name, getattr(self, f.name)))
        if self.num_minibatches > self.batch_size:
            raise ValueError(
                f"num_minibatches: {self.num_minibatches} is more than the transitions of a "
                f"rollout, num_envs * num_steps = {self.batch_size}"
            )

    @property
    def batch_size(self) -> int:
        """Transitions per rollout (more with ``whole_episodes``)."""
        return self.num_envs * self.num_steps

    @property
    def checkpoint_interval(self) -> int:
        """Updates between checkpoints."""
        return max(1, -(-self.checkpoint_every // self.batch_size))

    @property
    def uses_critic(self) -> bool:
        return self.algo != "reinforce" or self.baseline == "value"

    @property
    def whole_episodes(self) -> bool:
        """Rollouts run on until their episodes end: without a critic nothing bootstraps."""
        return not self.uses_critic

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.run_name or re.sub(r"[^\w.-]+", "_", f"{self.env}-{self.algo}-{self.seed}")

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
        return cls(**d)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check`` for a value that may also be ``None``."""
    return lambda name, value: None if value is None else check(name, value)


def _rate(name: str, value: object) -> float:
    return checks.check_in_range(name, value, 0.0, 1.0)


def _path(name: str, value: object) -> str:
    """A non-empty string; a ``pathlib.Path`` is taken as its string."""
    return checks.check_nonempty_str(
        name, os.fspath(value) if isinstance(value, os.PathLike) else value
    )


def _json_dict(name: str, value: object) -> dict[str, Any]:
    return checks.check_json(name, checks.check_instance(name, value, dict, "a dict"))  # type: ignore[return-value]


def _choice(*choices: object) -> Callable[[str, Any], Any]:
    return lambda name, value: checks.check_choice(name, value, choices)


FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "env": checks.check_nonempty_str, "algo": _choice(*ALGOS),
    "total_steps": checks.check_positive_int, "seed": checks.check_nonnegative_int,
    "num_envs": checks.check_positive_int, "num_steps": checks.check_positive_int,
    "vectorization_mode": _choice("sync", "async"), "gamma": _rate,
    "gae_lambda": _rate, "lr": checks.check_positive, "anneal_lr": checks.check_bool,
    "hidden": checks.check_int_tuple, "activation": _choice(*ACTIVATIONS),
    "normalize_obs": checks.check_bool, "normalize_rewards": checks.check_bool,
    "log_std_init": checks.check_finite_number,
    "baseline": _choice("none", "mean", "value"),
    "normalize_advantages": checks.check_bool, "ent_coef": checks.check_nonnegative,
    "vf_coef": checks.check_nonnegative,
    "max_grad_norm": partial(checks.check_positive, allow_inf=True),
    "update_epochs": checks.check_positive_int, "num_minibatches": checks.check_positive_int,
    "clip_eps": checks.check_positive, "clip_value": _optional(checks.check_positive),
    "target_kl": _optional(checks.check_positive), "max_kl": checks.check_positive,
    "cg_iters": checks.check_positive_int, "cg_damping": checks.check_nonnegative,
    "line_search": checks.check_bool, "eval_every": checks.check_nonnegative_int,
    "eval_episodes": checks.check_positive_int, "stop_at_threshold": checks.check_bool,
    "target_return": _optional(checks.check_finite_number),
    "checkpoint_every": checks.check_positive_int, "out": _path,
    "run_name": _optional(checks.check_path_name), "tensorboard": checks.check_bool,
    "torch_threads": checks.check_positive_int, "progress": checks.check_bool,
    "plot": checks.check_bool, "extra": _json_dict,
    "workers": checks.check_nonnegative_int, "ray_address": _optional(checks.check_nonempty_str),
    "device": _choice("cpu", "cuda", "auto"),
}  # fmt: skip
"""The check of every Config field: ``check(name, value) -> value`` (converted, e.g. a list of
hidden sizes to a tuple); ``TypeError`` / ``ValueError`` naming the field otherwise."""


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError from None


def _parse_int(text: str) -> int:
    value = _literal(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1e6
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return value


def _parse_bool(text: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}  # fmt: skip
    if text.strip().lower() not in words:
        raise ValueError
    return words[text.strip().lower()]


def _parse_ints(text: str) -> tuple[Any, ...]:
    value = _literal(text)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, (tuple, list)):
        raise ValueError
    return tuple(value)


def _parse_dict(text: str) -> dict[str, Any]:
    value = _literal(text)
    if not isinstance(value, dict):
        raise ValueError
    return value


_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "str": (str, "a string"),
    "int": (_parse_int, "an int (e.g. 200000, 200_000 or 2e5)"),
    "float": (float, "a float"),
    "bool": (_parse_bool, "true or false"),
    "tuple[int, ...]": (_parse_ints, "a tuple of ints, e.g. (64, 64)"),
    "dict[str, Any]": (_parse_dict, "a dict, e.g. {'note': 1}"),
}


def parse_field(name: str, text: str) -> Any:
    """The value of Config field ``name`` written as ``text`` (a command line's ``--set``).

    Read as the field's declared type: ints accept ``200_000`` and ``2e5``, bools ``true`` /
    ``false`` (any case, or 1/0, yes/no), optional fields ``none``, hidden sizes ``(64, 64)`` or
    ``64``. The range is checked by :class:`Config` itself.

    Raises:
        ValueError: naming the field, for an unknown field or a value of another type.
    """
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{name}: unknown Config field{hint} (fields: {', '.join(fields)})")
    kind = str(fields[name].type)
    optional = kind.endswith(" | None")
    parser, what = _PARSERS[kind.removesuffix(" | None")]
    if optional and text.strip().lower() in ("none", "null"):
        return None
    try:
        return parser(text)
    except ValueError:
        what += " or none" if optional else ""
        raise ValueError(f"{name}: expected {what}, got {text!r}") from None


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
    return Config(env=env, algo=algo, **_keep_minibatch_size(base, overrides))


def _keep_minibatch_size(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; where the overrides change the rollout's size
    (``num_envs``, ``num_steps``) but not ``num_minibatches``, the number of minibatches follows so
    that their size stays the one the preset chose (at least one minibatch, at most one per
    transition): shrinking a rollout for a quick run never makes the config invalid."""
    merged = {**base, **overrides}
    if "num_minibatches" in overrides or not ({"num_envs", "num_steps"} & overrides.keys()):
        return merged
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    old = base.get("num_envs", defaults["num_envs"]) * base.get("num_steps", defaults["num_steps"])
    new = merged.get("num_envs", defaults["num_envs"]) * merged.get(
        "num_steps", defaults["num_steps"]
    )
    minibatches = base.get("num_minibatches", defaults["num_minibatches"])
    if isinstance(old, int) and isinstance(new, int) and old > 0 and new > 0:
        merged["num_minibatches"] = min(new, max(1, round(minibatches * new / old)))
    return merged
