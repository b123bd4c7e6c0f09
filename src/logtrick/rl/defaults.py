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
γ                           1 − 1/T for a time limit of T       below; 0.99 is Schulman et al.
                            steps, within [0.99, 0.995]         2017's MuJoCo value
GAE λ                       0.95 at γ = 0.99, else 0.98         Schulman et al. 2016 (0.96–0.99
                                                                for long horizons); rl-zoo
network                     separate actor and critic, tanh     Huang et al. 2022 (details 2, 13);
                            64 × 64, orthogonal init            SB3 ``MlpPolicy``
Adam                        lr 3·10⁻⁴ annealed linearly to 0,   Huang et al. 2022 (details 3–4);
                            ε 10⁻⁵, global grad-norm 0.5        CleanRL ``ppo_continuous_action``
ppo rollout                 2,048 transitions per update        Schulman et al. 2017; SB3 and
                            (8 envs × 256 steps)                CleanRL MuJoCo defaults
ppo epochs × minibatches    10 × 32 (minibatches of 64)         the same
ppo clip, entropy           0.2, 0                              the same
collection                  in turn with the update             Schulman et al. 2017; overlap
                            (on-policy)                         measured below
Gaussian policy             state-independent log σ, init 0     Huang et al. 2022 (details 3–4)
budget                      1M env steps                        MuJoCo-1M benchmarks; rl-zoo
==========================  ==================================  ==================================

Two choices depart from the single-env references, for wall-clock on CPU: the 2,048 transitions
of a rollout come from 8 environments × 256 steps instead of 1 × 2,048 (one batched forward pass
serves 8 environments; GAE bootstraps each 256-step segment with :math:`V(s_{T})`), and the
deterministic evaluation is spaced by the time limit (below).

**Discount.** Success is judged on the undiscounted return of a whole episode (the env's
``reward_threshold``), so the discount's horizon :math:`1/(1-\gamma)` should reach far into the
episode: with γ = 0.99 (a 100-step horizon) LunarLanderContinuous-v3's PPO learnt to hover
instead of landing on 2 of 3 seeds in 1M steps (the landing bonus lies hundreds of steps ahead).
γ = 1 − 1/T for a time limit of T, clipped to [0.99, 0.995], with λ = 0.98 when γ > 0.99; an env
without a time limit keeps 0.99 and 0.95. The upper end is measured, not derived: γ = 0.999 (a
horizon spanning 1,000-step episodes) also landed LunarLanderContinuous on 3 of 3 seeds, but it
held Hopper-v5 at the alive bonus's plateau (final return ≈ 1,000 at 300k steps on 3 of 3 seeds;
at 0.995 the median is 2,406, at 0.99 1,438) and halved HalfCheetah's and Walker2d's. At 0.995
Walker2d-v5's median at 300k is below 0.99's (644 against 1,921; records in
``benchmarks/results/rl_suite_mujoco_round3b.jsonl``); the suite with today's defaults:
BENCHMARKS.md §11.

**Evaluation.** An evaluation runs ``eval_episodes`` episodes of up to ``max_episode_steps``
steps, so ``eval_every`` is at least their product: an evaluation then takes no more env steps
than the training between two evaluations, and since its steps are batched and skip the update,
it costs a fraction of that training's time even on 1,000-step episodes.

**Overlap is not a default.** ``Config.overlap`` collects the next rollout in a child process
while PPO updates on the last: on two cores the env and the network run at once, and a MuJoCo
run takes about half the wall-clock. The one update of lag it adds is corrected by the decoupled
objective (:func:`~logtrick.rl.update.ppo_loss`), so the expected gradient is the on-policy
one, but the data is still one policy old: on Hopper-v5 at 300k steps the median final return
over seeds 0–5 was 918 with overlap against 2,615 without, 5 of 6 overlapped seeds below every
on-policy one; on the other suite envs the two are within their seed-to-seed spread. A default
must not trade return for speed, so every run collects in turn unless ``--overlap`` is given
(BENCHMARKS.md §11).

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
    Hilton, Cobbe, Schulman, *Batch size-invariance for policy optimization*, NeurIPS 2022.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from gymnasium import spaces

__all__ = ["EnvFacts", "default_overrides", "discount", "env_facts"]

EVAL_EPISODES = 20
"""Episodes per evaluation (``Config.eval_episodes``'s default)."""
MIN_EVAL_EVERY = 5_000
"""Fewest env steps between two evaluations."""

COMMON: dict[str, Any] = {
    "total_steps": 1_000_000, "lr": 3e-4, "anneal_lr": True,
    "hidden": (64, 64), "activation": "tanh", "normalize_obs": True, "normalize_rewards": True,
    "max_grad_norm": 0.5, "vf_coef": 0.5, "ent_coef": 0.0, "log_std_init": 0.0,
}  # fmt: skip
"""Every algorithm, every space (γ and λ: :func:`discount`)."""

GAMMA_RANGE = (0.99, 0.995)
"""The smallest and largest discount :func:`discount` chooses."""

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
        return EnvFacts(
            env.single_observation_space, env.single_action_space, _limit(spec), _threshold(spec)
        )
    if isinstance(env, gym.Env):
        return EnvFacts(
            env.observation_space, env.action_space, _limit(env.spec), _threshold(env.spec)
        )
    if isinstance(env, str):
        from logtrick.rl.envs import check_env_id

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


def discount(facts: EnvFacts) -> dict[str, float]:
    r"""γ and GAE λ from the time limit T: a horizon that grows with the episode, up to 200 steps.

    .. math::  \gamma = \min(0.995,\ \max(0.99,\ 1 - 1/T)),\qquad
               \lambda = 0.98 \text{ if } \gamma > 0.99 \text{ else } 0.95

    Args:
        facts: the env's :class:`EnvFacts` (without a time limit: 0.99 and 0.95).

    Returns:
        ``{"gamma": γ, "gae_lambda": λ}``.
    """
    low, high = GAMMA_RANGE
    limit = facts.max_episode_steps
    gamma = low if not limit else round(min(high, max(low, 1.0 - 1.0 / limit)), 6)
    return {"gamma": gamma, "gae_lambda": 0.98 if gamma > low else 0.95}


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
    return {**COMMON, **discount(facts), **PER_ALGO[algo], "eval_every": eval_every(facts)}
