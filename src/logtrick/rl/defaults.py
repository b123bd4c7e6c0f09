r"""Training defaults for an environment nobody tuned, chosen from its spaces and time limit.

``preset(env, algo)`` uses :func:`default_overrides` for every environment that has no row in
``PRESETS``. The rule follows the settings the field has found robust across tasks rather than
tuned to one, and it is the same for every observation and action space, so that a new
environment gets what the MuJoCo and classic-control benchmarks agree on:

==========================  ==================================  ==================================
setting                     value                               source
==========================  ==================================  ==================================
observations                running mean/std normalisation,     Huang et al. 2022 (continuous
                            clipped to ±10                      details 4–5); Andrychowicz et al.
                                                                2021 (§3.6: "always")
rewards                     divided by the running std of the   Engstrom et al. 2020; Huang et al.
                            discounted return                   2022 (details 6–7)
γ, GAE λ                    0.99, 0.95                          Schulman et al. 2017 (MuJoCo
                                                                table); SB3 and CleanRL defaults
network                     separate actor and critic, tanh     Huang et al. 2022 (details 2, 13);
                            64 × 64, orthogonal init            SB3 ``MlpPolicy``
Adam                        lr 3·10⁻⁴ annealed linearly to 0,   Huang et al. 2022 (details 3–4);
                            ε 10⁻⁵, global grad-norm 0.5        CleanRL ``ppo_continuous_action``
ppo rollout                 2,048 transitions per update        Schulman et al. 2017; SB3 and
                            (8 envs × 256 steps)                CleanRL MuJoCo defaults
ppo epochs × minibatches    10 × 32 (minibatches of 64)         the same
ppo clip, entropy           0.2, 0                              the same
Gaussian policy             state-independent log σ, init 0     Huang et al. 2022 (details 3–4)
budget                      1M env steps                        MuJoCo-1M benchmarks; rl-zoo
==========================  ==================================  ==================================

Two choices depart from the single-env references, for wall-clock on CPU: the 2,048 transitions
of a rollout come from 8 environments × 256 steps instead of 1 × 2,048 (one batched forward pass
serves 8 environments; GAE bootstraps each 256-step segment with :math:`V(s_{T})`), and the
deterministic evaluation is spaced by the time limit (below).

**Evaluation.** An evaluation runs ``eval_episodes`` episodes of up to ``max_episode_steps``
steps, so ``eval_every`` is at least their product: an evaluation then takes no more env steps
than the training between two evaluations, and since its steps are batched and skip the update,
it costs a fraction of that training's time even on 1,000-step episodes.

The other algorithms get the analogous defaults of their reference implementations: ``a2c``
5-step rollouts (Mnih et al. 2016; SB3 ``A2C``), ``npg`` 2,048-transition rollouts, a KL radius
of 0.01 and 10 critic epochs (Schulman et al. 2015; SB3-contrib ``TRPO``), ``reinforce`` whole
2,048-transition batches with a learned value baseline.

References:
    Schulman et al., *Proximal Policy Optimization Algorithms*, 2017 (table 3).
    Huang et al., *The 37 Implementation Details of Proximal Policy Optimization*, ICLR blog
    track, 2022.
    Andrychowicz et al., *What Matters in On-Policy Reinforcement Learning? A Large-Scale
    Empirical Study*, ICLR 2021.
    Engstrom et al., *Implementation Matters in Deep Policy Gradients*, ICLR 2020.
    Raffin et al., *Stable-Baselines3*, JMLR 2021, and rl-baselines3-zoo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from gymnasium import spaces

__all__ = ["EnvFacts", "default_overrides", "env_facts"]

EVAL_EPISODES = 20
"""Episodes per evaluation (``Config.eval_episodes``'s default)."""
MIN_EVAL_EVERY = 5_000
"""Fewest env steps between two evaluations."""

COMMON: dict[str, Any] = {
    "total_steps": 1_000_000, "gamma": 0.99, "gae_lambda": 0.95, "lr": 3e-4, "anneal_lr": True,
    "hidden": (64, 64), "activation": "tanh", "normalize_obs": True, "normalize_rewards": True,
    "max_grad_norm": 0.5, "vf_coef": 0.5, "ent_coef": 0.0, "log_std_init": 0.0,
}  # fmt: skip
"""Every algorithm, every space."""

PER_ALGO: dict[str, dict[str, Any]] = {
    "ppo": {"num_envs": 8, "num_steps": 256, "update_epochs": 10, "num_minibatches": 32,
            "clip_eps": 0.2},
    "a2c": {"num_envs": 8, "num_steps": 5, "update_epochs": 1, "num_minibatches": 1,
            "lr": 7e-4, "gae_lambda": 1.0},
    "npg": {"num_envs": 8, "num_steps": 256, "update_epochs": 10, "num_minibatches": 16,
            "lr": 1e-3, "max_kl": 0.01},
    "reinforce": {"num_envs": 8, "num_steps": 256, "update_epochs": 1, "num_minibatches": 1,
                  "lr": 1e-3, "baseline": "value"},
}  # fmt: skip
"""What differs per algorithm (wins over ``COMMON``)."""


@dataclass(frozen=True)
class EnvFacts:
    """What the defaults depend on, read from an environment and its registration."""

    observation_space: spaces.Space
    action_space: spaces.Space
    max_episode_steps: int | None
    """The time limit (``None``: the env has none)."""
    reward_threshold: float | None
    """The return that counts as solved (``None``: not registered)."""


def env_facts(env: str | gym.Env | Callable[[], gym.Env]) -> EnvFacts:
    """Spaces, time limit and reward threshold of ``env``.

    Args:
        env: a registered id (made once, then closed), a ``gymnasium.Env`` or a vector env
            (read, not closed), or a zero-argument factory (called once, then closed).

    Returns:
        The :class:`EnvFacts`.
    """
    if isinstance(env, gym.vector.VectorEnv):
        spec = env.spec
        return EnvFacts(env.single_observation_space, env.single_action_space,
                        _limit(spec), _threshold(spec))  # fmt: skip
    if isinstance(env, gym.Env):
        return EnvFacts(env.observation_space, env.action_space, _limit(env.spec),
                        _threshold(env.spec))  # fmt: skip
    if isinstance(env, str):
        from logtrick.checks import check_env_id

        check_env_id("env", env)
        try:
            made = gym.make(env)
        except gym.error.Error as err:  # e.g. a missing extra (box2d, mujoco)
            raise ValueError(f"env: cannot make {env!r}: {err}") from None
    elif callable(env):
        made = env()
        if not isinstance(made, gym.Env):
            raise TypeError(f"env: the factory returned {type(made).__name__}, not a gymnasium.Env")
    else:
        raise TypeError(
            f"env: expected an id, a gymnasium.Env or a factory, got {type(env).__name__}"
        )
    try:
        return env_facts(made)
    finally:
        made.close()


def _limit(spec: gym.envs.registration.EnvSpec | None) -> int | None:
    return None if spec is None else spec.max_episode_steps


def _threshold(spec: gym.envs.registration.EnvSpec | None) -> float | None:
    return None if spec is None or spec.reward_threshold is None else float(spec.reward_threshold)


def eval_every(facts: EnvFacts, episodes: int = EVAL_EPISODES) -> int:
    r"""Env steps between evaluations: at least what one evaluation may take.

    .. math::  \text{eval\_every} = \max(5000,\ \text{episodes} \times \text{max\_episode\_steps})

    Args:
        facts: the env's :class:`EnvFacts` (without a time limit: 5,000).
        episodes: episodes per evaluation.

    Returns:
        The interval in env steps.
    """
    limit = facts.max_episode_steps or 0
    return max(MIN_EVAL_EVERY, episodes * limit)


def default_overrides(
    env: str | gym.Env | Callable[[], gym.Env] | EnvFacts, algo: str = "ppo"
) -> dict[str, Any]:
    """``Config`` overrides for ``env`` and ``algo`` when ``env`` has no preset.

    Args:
        env: an env id, a ``gymnasium.Env``, a zero-argument env factory, or its
            :class:`EnvFacts`.
        algo: one of ``reinforce``, ``a2c``, ``ppo``, ``npg``.

    Returns:
        Field name -> value; ``preset`` applies the caller's overrides on top.

    Raises:
        ValueError: ``algo`` is not an algorithm.
    """
    if algo not in PER_ALGO:
        raise ValueError(f"algo: expected one of {tuple(PER_ALGO)}, got {algo!r}")
    facts = env if isinstance(env, EnvFacts) else env_facts(env)
    return {**COMMON, **PER_ALGO[algo], "eval_every": eval_every(facts)}
