r"""Collect rollouts from Gymnasium 1.x vector environments into time-major tensors.

The collector steps ``B`` environments for ``T`` steps and returns a :class:`Rollout` of
``(T, B, ...)`` tensors, with ``terminated`` and ``truncated`` kept apart and ``next_values``
holding :math:`V(s_{t+1})` *of the same episode*, so that a time-limited episode is bootstrapped
with :math:`\gamma V(s_\text{final})` (see :mod:`logtrick.rl.returns`).

Both Gymnasium autoreset modes are handled (``env.metadata["autoreset_mode"]``):

* ``NEXT_STEP`` (the default): the step after a done resets that environment, ignores the
  action and returns reward 0. That row is marked ``valid=False``; the final observation of
  the finished episode is the observation returned at the done step, i.e. ``obs[t + 1]``.
* ``SAME_STEP``: the observation returned at a done step is already the reset observation; the
  final observation comes from ``info["final_obs"]`` (mask ``info["_final_obs"]``), and its
  value is computed for truncated environments only.

``DISABLED`` is refused: it needs the caller to reset environments by hand.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import VectorizeMode
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import Tensor

__all__ = ["Collector", "Rollout", "make_env"]

_MODES = ("sync", "async", "vector_entry_point")


@dataclass
class Rollout:
    r"""``T`` steps of ``B`` environments, time-major.

    ==================  ======================  ==============================================
    field               shape                   description
    ==================  ======================  ==============================================
    ``obs``             (T, B, \*obs_shape)     float32, as the policy saw them (before
                                                normalisation)
    ``actions``         (T, B, \*act_shape)     the sampled (unclipped) actions
    ``log_probs``       (T, B)                  :math:`\log\pi(a_t \mid s_t)` at collection
    ``values``          (T, B)                  :math:`V(s_t)` at collection (zeros without a
                                                critic)
    ``rewards``         (T, B)                  float32
    ``terminated``      (T, B)                  bool
    ``truncated``       (T, B)                  bool (time limits)
    ``next_values``     (T, B)                  :math:`V(s_{t+1})` of the same episode; 0
                                                where terminated
    ``valid``           (T, B)                  bool; False for NEXT_STEP's reset transition
    ==================  ======================  ==============================================

    ``episode_returns`` / ``episode_lengths`` list the episodes that finished during this
    rollout (undiscounted return, number of valid steps), including those begun in an earlier
    one.
    """

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    next_values: Tensor
    valid: Tensor
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)


def _check_env_id(env_id: str) -> None:
    """Raise ``ValueError`` listing close matches when ``env_id`` is not registered."""
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"env: unknown environment id {env_id!r} ({err}){hint}") from None


def make_env(
    env: str | gym.Env | VectorEnv | Callable[[], gym.Env],
    num_envs: int | None = None,
    vectorization_mode: str | VectorizeMode = "sync",
    seed: int | None = None,
    *,
    autoreset_mode: str | AutoresetMode | None = None,
) -> VectorEnv:
    """Build a Gymnasium vector environment.

    Args:
        env: an environment id (``gymnasium.make_vec``), a ``VectorEnv`` (returned as is), a
            single ``gymnasium.Env`` instance (wrapped into a one-env ``SyncVectorEnv``; the
            instance is used once, not copied) or a zero-argument factory returning an ``Env``.
        num_envs: number of copies (default 1; for a ``VectorEnv``, its own count).
        vectorization_mode: ``"sync"``, ``"async"`` (one process per env) or
            ``"vector_entry_point"`` (the id's own vectorised implementation).
        seed: if given, the env is reset with it (sub-env ``i`` gets ``seed + i``) and its
            action space is seeded, so that later unseeded resets are reproducible.
        autoreset_mode: ``"NextStep"`` / ``"SameStep"`` or an ``AutoresetMode``; default the
            vectoriser's own (``NEXT_STEP`` for Gymnasium's).

    Returns:
        The vector env.
    """
    if isinstance(vectorization_mode, VectorizeMode):
        vectorization_mode = vectorization_mode.value
    if vectorization_mode not in _MODES:
        raise ValueError(
            f"vectorization_mode: expected one of {_MODES}, got {vectorization_mode!r}"
        )
    if num_envs is not None and (not isinstance(num_envs, int) or num_envs < 1):
        raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
    kwargs = {} if autoreset_mode is None else {"autoreset_mode": AutoresetMode(autoreset_mode)}
    if isinstance(env, VectorEnv):
        if num_envs not in (None, env.num_envs):
            raise ValueError(f"num_envs: the vector env has {env.num_envs} envs, got {num_envs}")
        envs = env
    elif isinstance(env, str):
        _check_env_id(env)
        try:
            envs = gym.make_vec(env, num_envs or 1, vectorization_mode, vector_kwargs=kwargs)
        except gym.error.Error as err:
            raise ValueError(
                f"vectorization_mode={vectorization_mode!r}, env {env!r}: {err}"
            ) from err
    elif isinstance(env, gym.Env):
        if num_envs not in (None, 1) or vectorization_mode != "sync":
            raise ValueError(
                "env: a gymnasium.Env instance can only make one synchronous env (num_envs=1, "
                f"vectorization_mode='sync'), got num_envs={num_envs}, {vectorization_mode!r}; "
                "pass an env id or a factory instead"
            )
        envs = gym.vector.SyncVectorEnv([lambda: env], **kwargs)
    elif callable(env):
        vec = (
            gym.vector.AsyncVectorEnv if vectorization_mode == "async" else gym.vector.SyncVectorEnv
        )
        envs = vec([env] * (num_envs or 1), **kwargs)
    else:
        raise TypeError(f"env: expected an id, Env, VectorEnv or factory, got {type(env).__name__}")
    if seed is not None:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
    return envs


def _autoreset_mode(env: VectorEnv) -> AutoresetMode:
    """The env's autoreset mode; NEXT_STEP or SAME_STEP, else ``ValueError``."""
    mode = env.metadata.get("autoreset_mode")
    if mode is None:
        raise ValueError(
            f"env: {env} has no metadata['autoreset_mode']; set it to "
            "gymnasium.vector.AutoresetMode.NEXT_STEP or SAME_STEP"
        )
    mode = AutoresetMode(mode)
    if mode == AutoresetMode.DISABLED:
        raise ValueError(
            "env: autoreset_mode DISABLED is not supported (it needs manual resets); "
            "build the vector env with autoreset_mode NEXT_STEP or SAME_STEP"
        )
    return mode


class Collector:
    """Step a vector env with a policy and return :class:`Rollout` s of ``num_steps`` steps.

    Buffers ``(T, B, ...)`` are allocated once on the CPU and filled in place with numpy views
    (one numpy→torch conversion per step: none for observations, which the policy reads as a
    view of the buffer); :meth:`collect` returns *copies* on ``device``, so a rollout stays
    valid after the next call. Episode returns and lengths are accumulated per env.

    The policy needs ``step(obs) -> (action, log_prob, value)``, ``value(obs)``,
    ``to_env(action) -> np.ndarray`` and ``update_obs_stats(obs)`` (see
    :class:`~logtrick.rl.policies.ActorCritic`); the observation statistics are updated with
    each step's observations before the policy acts on them.

    Args:
        env: a ``VectorEnv``, or anything :func:`make_env` accepts (then one env).
        policy: the acting policy, on ``device``.
        num_steps: ``T``, steps per environment per rollout.
        device: where the policy runs and where returned tensors live.
        seed: reset seed of the first :meth:`collect` (``None``: unseeded).
    """

    def __init__(
        self,
        env: Any,
        policy: Any,
        num_steps: int,
        device: str | torch.device = "cpu",
        seed: int | list[int] | None = None,
    ) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
        self.env = env if isinstance(env, VectorEnv) else make_env(env)
        self.policy, self.num_steps, self.seed = policy, num_steps, seed
        self.device = torch.device(device)
        self.autoreset_mode = _autoreset_mode(self.env)
        space = self.env.single_observation_space
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(f"env: observation space {space!r} is not supported; expected a Box")
        self.num_envs = B = self.env.num_envs
        T, f32 = num_steps, torch.float32
        self._buf = {
            "obs": torch.zeros((T, B, *space.shape), dtype=f32),
            "log_probs": torch.zeros((T, B), dtype=f32),
            "values": torch.zeros((T, B), dtype=f32),
            "rewards": torch.zeros((T, B), dtype=f32),
            "terminated": torch.zeros((T, B), dtype=torch.bool),
            "truncated": torch.zeros((T, B), dtype=torch.bool),
            "valid": torch.ones((T, B), dtype=torch.bool),
            "final_values": torch.zeros((T, B), dtype=f32),
            "has_final": torch.zeros((T, B), dtype=torch.bool),
        }
        self._np = {k: v.numpy() for k, v in self._buf.items()}
        self._obs_rows = self._buf["obs"].unbind(0)  # per-step views, made once
        self._on_cpu = self.device.type == "cpu"
        self._actions: Tensor | None = None  # allocated at the first step, shaped like an action
        self._same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        self._carry_return = np.zeros(B, dtype=np.float64)  # of the episodes still running
        self._carry_length = np.zeros(B, dtype=np.int64)
        self._last_done = np.zeros(B, dtype=bool)  # done at the previous collect's last step
        self._next_obs: np.ndarray | None = None
        self.global_step = 0  # environment steps taken (summed over envs)

    def reset(self, seed: int | list[int] | None = None) -> None:
        """Reset every env (unfinished episodes are dropped) and the episode accumulators."""
        obs, _ = self.env.reset(seed=seed)
        self._check_finite(-1, obs, np.zeros(self.num_envs))
        self._next_obs = obs
        self._last_done[:] = False
        self._carry_return[:] = 0.0
        self._carry_length[:] = 0

    def collect(self) -> Rollout:
        """Run ``num_steps`` steps of every env, continuing from where the last call stopped."""
        if self._next_obs is None:
            self.reset(self.seed)
        with torch.inference_mode():
            self._buf["has_final"].fill_(False)
            for t in range(self.num_steps):
                self._step(t)
            last = torch.from_numpy(np.asarray(self._next_obs, dtype=np.float32))
            last_value = self.policy.value(last.to(self.device)).cpu()
        self.global_step += self.num_steps * self.num_envs
        return self._assemble(last_value)

    def _step(self, t: int) -> None:
        """One vector step: act on the current observations, store the transition in row t.

        Only what must happen per step is here; validity masks and episode statistics are
        computed for all T rows at once by :meth:`_assemble`.
        """
        arr, policy = self._np, self.policy
        arr["obs"][t] = self._next_obs
        obs = self._obs_rows[t] if self._on_cpu else self._obs_rows[t].to(self.device)
        policy.update_obs_stats(obs)
        action, log_prob, value = policy.step(obs)
        if self._actions is None:
            self._allocate_actions(action)
        if self._on_cpu:  # numpy writes are several times cheaper than torch indexing
            self._actions_np[t] = action.numpy()
            arr["log_probs"][t] = log_prob.numpy()
            arr["values"][t] = value.numpy()
        else:
            self._actions[t] = action
            self._buf["log_probs"][t] = log_prob
            self._buf["values"][t] = value
        next_obs, reward, terminated, truncated, info = self.env.step(policy.to_env(action))
        arr["rewards"][t] = reward
        arr["terminated"][t] = terminated
        arr["truncated"][t] = truncated
        if not (_finite(reward) and _finite(next_obs)):
            self._check_finite(t, next_obs, reward)
        if self._same_step and truncated.any():  # V(final obs) bootstraps only truncations
            self._final_values(t, truncated & ~terminated, info)
        self._next_obs = next_obs

    def _allocate_actions(self, action: Tensor) -> None:
        with torch.inference_mode(False):
            shape = (self.num_steps, *action.shape)
            self._actions = torch.zeros(shape, dtype=action.dtype)
            self._actions_np = self._actions.numpy()

    def _final_values(self, t: int, truncated: np.ndarray, info: dict[str, Any]) -> None:
        """SAME_STEP: V(final observation) of the envs truncated at step t."""
        if "final_obs" not in info:
            raise ValueError(f"env: truncated at step {t} but info has no 'final_obs' (SAME_STEP)")
        index = np.flatnonzero(truncated & info["_final_obs"])
        if len(index) == 0:
            return
        final = np.stack(info["final_obs"][index]).astype(np.float32)
        self._check_finite(t, final, np.zeros(len(index)), index)
        value = self.policy.value(torch.from_numpy(final).to(self.device))
        self._np["final_values"][t, index] = value.cpu().numpy()
        self._np["has_final"][t, index] = True

    def _check_finite(
        self, t: int, obs: np.ndarray, reward: np.ndarray, envs: np.ndarray | None = None
    ) -> None:
        """``ValueError`` naming the step and env index of a NaN/inf reward or observation."""
        bad_obs = ~np.isfinite(np.asarray(obs, dtype=np.float64).reshape(len(obs), -1)).all(1)
        bad = ~np.isfinite(reward) | bad_obs
        if not bad.any():  # _finite's sum of squares overflowed: the data is finite
            return
        i = int(np.flatnonzero(bad)[0])
        env_index = int(envs[i]) if envs is not None else i
        what = "observation" if bad_obs[i] else "reward"
        step = self.global_step + t * self.num_envs
        where = "at reset" if t < 0 else f"at rollout step {t} (global step {step})"
        value = obs[i] if bad_obs[i] else reward[i]
        raise ValueError(f"env: NaN or inf {what} {where}, env index {env_index}: {value}")

    def _assemble(self, last_value: Tensor) -> Rollout:
        """Copy the buffers into a Rollout on ``device``, with next_values filled in."""
        buf = self._buf
        next_values = torch.empty_like(buf["values"])
        next_values[:-1] = buf["values"][1:]  # NEXT_STEP: obs[t + 1] is the final obs at a done
        next_values[-1] = last_value
        next_values = torch.where(buf["has_final"], buf["final_values"], next_values)
        next_values.masked_fill_(buf["terminated"], 0.0)
        done = self._np["terminated"] | self._np["truncated"]
        if not self._same_step:  # the step after a done is NEXT_STEP's reset transition
            valid = self._np["valid"]
            np.logical_not(done[:-1], out=valid[1:])
            np.logical_not(self._last_done, out=valid[0])
        returns, lengths = self._episode_stats(done)
        names = ("obs", "log_probs", "values", "rewards", "terminated", "truncated", "valid")
        data = {k: buf[k].to(self.device, copy=True) for k in names}
        return Rollout(
            actions=self._actions.to(self.device, copy=True),
            next_values=next_values.to(self.device),
            episode_returns=returns,
            episode_lengths=lengths,
            **data,
        )

    def _episode_stats(self, done: np.ndarray) -> tuple[list[float], list[int]]:
        """Return and length of every episode ending in the buffers, in (step, env) order.

        Running totals per env (cumulative sums over T, plus what carried over from earlier
        rollouts), minus their value at the env's previous episode end.
        """
        T = self.num_steps
        totals = (
            self._carry_return + np.cumsum(self._np["rewards"], 0, dtype=np.float64),
            self._carry_length + np.cumsum(self._np["valid"], 0),
        )
        ends = np.where(done, np.arange(T)[:, None], -1)
        before = np.maximum.accumulate(np.concatenate([np.full_like(ends[:1], -1), ends]), 0)[:-1]
        since = [
            total - np.where(before >= 0, np.take_along_axis(total, before.clip(0), 0), 0)
            for total in totals
        ]
        self._carry_return = np.where(done[-1], 0.0, since[0][-1])
        self._carry_length = np.where(done[-1], 0, since[1][-1])
        self._last_done = done[-1].copy()
        return since[0][done].tolist(), since[1][done].tolist()


def _finite(x: np.ndarray) -> bool:
    """Fast check: NaN/inf propagate through a sum of squares (an overflow is re-checked)."""
    flat = x.reshape(-1)
    return math.isfinite(flat.dot(flat))
