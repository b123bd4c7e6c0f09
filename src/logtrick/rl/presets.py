"""Where a :class:`~logtrick.rl.config.Config`'s values come from: the presets, the defaults.

One function, :func:`resolve`, gives every field its value, for the command line and for Python
alike: ``Config(env=..., algo=..., **fields)``, ``preset(env, algo, **fields)``,
``rl.Agent(env, algo, **fields)`` and ``logtrick train ENV --algo ... --set ...`` all give the same
configuration for the same arguments. A field not given takes, in this order:

1. the env's row of :data:`PRESETS` (the algorithm's row over the env's ``"*"`` row), or, for an
   env without a row, the defaults chosen from its spaces and time limit
   (:func:`logtrick.rl.defaults.default_overrides`);
2. :data:`logtrick.rl.config.BASE`, the values every env starts from (declared with each
   field).

The algorithm itself, when not given, is :func:`default_algo` of the env. Fields given change the
rollout's size but not ``num_minibatches``: the minibatches keep the size the preset chose
(:func:`keep_minibatch_size`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium as gym

__all__ = [
    "ALGOS",
    "CUSTOM_PREFIX",
    "DEFAULT_ALGOS",
    "PRESETS",
    "default_algo",
    "describe_env",
    "is_custom_env",
    "keep_minibatch_size",
    "resolve",
]

ALGOS = ("reinforce", "a2c", "ppo", "npg")
"""The algorithms, by name: ``Config.algo`` is one of them (their updates:
:data:`logtrick.rl.update.UPDATES`)."""

CUSTOM_PREFIX = "custom:"
"""How ``Config.env`` starts for an env given as an instance or a factory (not an id)."""

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


def is_custom_env(env: str) -> bool:
    """Whether ``Config.env`` describes an env given as an instance or factory (not an id)."""
    return env.startswith(CUSTOM_PREFIX)


def describe_env(env: str | gym.Env | Callable[[], gym.Env]) -> str:
    """``Config.env`` for ``env``: an id as it is; an instance or factory as ``custom:`` and the
    import path of its class or function (with the spec id an instance was made from), e.g.
    ``custom:mypackage.envs.GridWorld`` or ``custom:mypackage.make_env``."""
    if isinstance(env, str):
        return env
    import gymnasium as gym

    if isinstance(env, gym.Env):
        cls = type(env.unwrapped)
        spec = f" ({env.spec.id})" if env.spec is not None else ""
        return f"{CUSTOM_PREFIX}{cls.__module__}.{cls.__qualname__}{spec}"
    target = getattr(env, "__qualname__", type(env).__qualname__)
    return f"{CUSTOM_PREFIX}{getattr(env, '__module__', '?')}.{target}"


def resolve(
    env: str | gym.Env | Callable[[], gym.Env],
    algo: str | None,
    fields: dict[str, Any],
    base_values: dict[str, Any],
) -> dict[str, Any]:
    """The value of every Config field for ``env``, ``algo`` and the ``fields`` given.

    Args:
        env: an env id, or a ``gymnasium.Env`` / zero-argument factory (its spaces choose the
            defaults; ``Config.env`` becomes :func:`describe_env` of it).
        algo: the algorithm, ``None`` for :func:`default_algo` of ``env``.
        fields: the fields given by the caller (not checked here: ``Config`` checks them).
        base_values: what a field falls back to (:data:`logtrick.rl.config.BASE`).

    Returns:
        Field name -> value for every field.

    Raises:
        ValueError: ``env`` is an id Gymnasium does not know (with close matches).
    """
    from logtrick.rl.defaults import default_overrides
    from logtrick.rl.envs import check_env_id

    name = describe_env(env)
    algo = default_algo(name) if algo is None else algo
    if name in PRESETS:
        table = PRESETS[name]
        base = {**table.get("*", {}), **table.get(algo, {})}
    else:
        if isinstance(env, str):
            check_env_id("env", env)
        base = default_overrides(env, algo) if algo in ALGOS else {}
    merged = keep_minibatch_size({**base_values, **base}, fields)
    return {**merged, "env": name, "algo": algo}


def keep_minibatch_size(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` (holding every field of :data:`~logtrick.rl.config.BASE`) updated by
    ``overrides``; where the overrides change the rollout's size (``num_envs``,
    ``num_steps``) but not ``num_minibatches``, the number of minibatches follows so that their
    size stays the one the preset chose (at least one minibatch, at most one per transition):
    shrinking a rollout for a quick run never makes the config invalid."""
    merged = {**base, **overrides}
    if "num_minibatches" in overrides or not ({"num_envs", "num_steps"} & overrides.keys()):
        return merged
    sizes = [base["num_envs"], base["num_steps"], merged["num_envs"], merged["num_steps"]]
    if all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        old, new = sizes[0] * sizes[1], sizes[2] * sizes[3]
        minibatches = base["num_minibatches"]
        merged["num_minibatches"] = min(new, max(1, round(minibatches * new / old)))
    return merged
