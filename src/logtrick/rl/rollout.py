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

Observations are stored as the policy's features (:class:`~logtrick.rl.spaces.ObsLayout`:
``Dict`` / ``Tuple`` / discrete observations flattened, one-hot per discrete leaf). When the env
gives an action mask at reset (``info["action_mask"]`` or a ``Dict`` observation's
``"action_mask"`` key; :mod:`logtrick.rl.masks`), every step's mask (the one given with that
step's observation: in NEXT_STEP mode a reset step's info is the reset's) is passed to the
policy, checked (a row allowing nothing is an error naming the env and step) and stored in
``Rollout.action_masks`` for the update.

``next_values`` are computed once, at the end of a rollout, by :func:`next_values_of` from the
rollout's own values and the values of its *bootstrap observations* (the observation after the
last step, and SAME_STEP's final observations of truncated episodes), which the rollout keeps:
an update that re-evaluates the critic (new observation statistics) recomputes them the same way.

With ``whole_episodes=True`` (REINFORCE without a critic: nothing can bootstrap an unfinished
episode) a rollout runs on past ``num_steps`` until the episode of every env that was running at
its last step has ended; the transitions after that end are marked invalid, and every env is
reset when the rollout ends, so each rollout holds whole episodes of one policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import Tensor

from logtrick.checks import check_positive_int
from logtrick.rl.envs import autoreset_mode, make_env
from logtrick.rl.masks import check_action_mask, combine_masks, info_action_mask, sections
from logtrick.rl.spaces import MASK_KEY, ObsLayout

__all__ = ["Collector", "Rollout", "next_values_of"]

MAX_RUN_ON = 100_000
"""``whole_episodes``: steps a rollout may run past ``num_steps`` before the episodes still
running are an error (an env whose episodes never end would otherwise run on for ever)."""


@dataclass
class Rollout:
    r"""``T`` steps of ``B`` environments, time-major.

    ======================  ======================  ==============================================
    field                   shape                   description
    ======================  ======================  ==============================================
    ``obs``                 (T, B, \*obs_shape)     float32, as the policy saw them (before
                                                    normalisation)
    ``actions``             (T, B, \*act_shape)     the sampled (unclipped) actions
    ``log_probs``           (T, B)                  :math:`\log\pi(a_t \mid s_t)` at collection
    ``values``              (T, B)                  :math:`V(s_t)` at collection (zeros without a
                                                    critic)
    ``rewards``             (T, B)                  float32
    ``terminated``          (T, B)                  bool
    ``truncated``           (T, B)                  bool (time limits)
    ``next_values``         (T, B)                  :math:`V(s_{t+1})` of the same episode; 0
                                                    where terminated
    ``valid``               (T, B)                  bool; False for NEXT_STEP's reset transition
                                                    (and after an episode's end with
                                                    ``whole_episodes``)
    ``bootstrap_obs``       (K, \*obs_shape)        the observations behind ``next_values`` that
                                                    are not ``obs[t + 1]``
    ``bootstrap_index``     (K,)                    their flat index ``t * B + b`` into (T, B)
    ``action_masks``        (T, B, head_size)       bool allowed actions at :math:`s_t` (``None``
                                                    when the env gives no mask)
    ``behaviour_weights``   (T, B)                  :math:`\pi_{\text{prox}}/\mu` of a lagged
                                                    rollout, set by the update's ``prepare``
                                                    (``None``: on-policy)
    ======================  ======================  ==============================================

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
    bootstrap_obs: Tensor
    bootstrap_index: Tensor
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    action_masks: Tensor | None = None
    behaviour_weights: Tensor | None = None
    policy_lag = 0  # not a field: set by the collector after construction
    """Updates between the policy that acted and the one that learns from it (1 with
    ``overlap``, :mod:`logtrick.rl.overlap`): ``log_probs`` are then the behaviour policy's."""


def next_values_of(
    values: Tensor, bootstrap_values: Tensor, bootstrap_index: Tensor, terminated: Tensor
) -> Tensor:
    r""":math:`V(s_{t+1})` of the same episode for every step, from the rollout's own values.

    .. math::  \text{next}_{t,b} = \begin{cases} 0 & \text{terminated}_{t,b} \\
               V(\text{bootstrap\_obs}_k) & t B + b = \text{bootstrap\_index}_k \\
               V(s_{t+1,b}) & \text{otherwise} \end{cases}

    Args:
        values: ``(T, B)`` :math:`V(s_t)`.
        bootstrap_values: ``(K,)`` values of the rollout's ``bootstrap_obs``.
        bootstrap_index: ``(K,)`` their flat indices, distinct, covering the last row.
        terminated: ``(T, B)`` bool.

    Returns:
        ``(T, B)`` ``next_values``.
    """
    out = torch.empty_like(values)
    out[:-1] = values[1:]
    out.view(-1)[bootstrap_index] = bootstrap_values.to(values.dtype)
    return out.masked_fill_(terminated, 0.0)


class Collector:
    """Step a vector env with a policy and return :class:`Rollout` s of ``num_steps`` steps.

    Buffers ``(T, B, ...)`` are allocated once on the CPU and filled in place with numpy views
    (one numpy→torch conversion per step: none for observations, which the policy reads as a
    view of the buffer); :meth:`collect` returns *copies* on ``device``, so a rollout stays
    valid after the next call. Episode returns and lengths are accumulated per env. Rewards and
    observations are checked for NaN and inf once per rollout, before anything uses them (a
    ``ValueError`` names the first bad step and env): a check per step would cost about as much
    as all the rest of the bookkeeping.

    The policy needs ``step(obs) -> (action, log_prob, value)`` (``step(obs, action_mask)``
    when the env gives masks), ``value(obs)``, ``to_env(action) -> np.ndarray`` and
    ``update_obs_stats(obs)`` (see :class:`~logtrick.rl.policies.ActorCritic`); the observation
    statistics are updated with each step's observations (features) before the policy acts on
    them, unless frozen: the trainer freezes them for the rollout and folds its observations in
    once after it (:class:`~logtrick.rl.distributed.RankCollector`), as workers and ranks do.

    Args:
        env: a ``VectorEnv``, or anything :func:`~logtrick.rl.envs.make_env` accepts (then one env).
        policy: the acting policy, on ``device``.
        num_steps: ``T``, steps per environment per rollout (the least, with
            ``whole_episodes``).
        device: where the policy runs and where returned tensors live.
        seed: reset seed of the first :meth:`collect` (``None``: unseeded).
        whole_episodes: run each rollout on until the episodes running at its ``T``-th step
            have ended, then reset every env (see the module docstring).
    """

    def __init__(
        self,
        env: Any,
        policy: Any,
        num_steps: int,
        device: str | torch.device = "cpu",
        seed: int | list[int] | None = None,
        whole_episodes: bool = False,
    ) -> None:
        check_positive_int("num_steps", num_steps)
        self.env = env if isinstance(env, VectorEnv) else make_env(env)
        self.policy, self.num_steps, self.seed = policy, num_steps, seed
        self.whole_episodes = bool(whole_episodes)
        self.device = torch.device(device)
        self.autoreset_mode = autoreset_mode(self.env)
        self._layout = ObsLayout(self.env.single_observation_space)
        self._mask_sizes: list[int] | None = None  # set at reset when the env gives masks
        self.num_envs = B = self.env.num_envs
        self._on_cpu = self.device.type == "cpu"
        self._same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        self._buf: dict[str, Tensor] = {}
        self._actions: Tensor | None = None  # allocated at the first step, shaped like an action
        self._allocate(num_steps)
        self._carry_return = np.zeros(B, dtype=np.float64)  # of the episodes still running
        self._carry_length = np.zeros(B, dtype=np.int64)
        self._last_done = np.zeros(B, dtype=bool)  # done at the previous collect's last step
        self._next_obs: np.ndarray | None = None
        self._finals: list[tuple[int, np.ndarray, np.ndarray]] = []  # SAME_STEP final obs
        self._ended = np.zeros(B, dtype=np.int64)  # whole_episodes: last row of each env
        self.global_step = 0  # environment steps taken (summed over envs)

    def _allocate(self, rows: int) -> None:
        """(Re)allocate the ``(rows, B, ...)`` buffers and their views, keeping their contents."""
        B, f32 = self.num_envs, torch.float32
        shapes = {"obs": (self._layout.shape, f32), "log_probs": ((), f32),
                  "values": ((), f32), "rewards": ((), f32), "terminated": ((), torch.bool),
                  "truncated": ((), torch.bool)}  # fmt: skip
        if self._mask_sizes is not None:
            shapes["action_masks"] = ((sum(self._mask_sizes),), torch.bool)
        old = self._buf
        self._buf = {k: torch.zeros((rows, B, *shape), dtype=dtype)
                     for k, (shape, dtype) in shapes.items()}  # fmt: skip
        for k, v in old.items():
            self._buf[k][: len(v)] = v
        self._np = {k: v.numpy() for k, v in self._buf.items()}
        self._obs_rows = self._buf["obs"].unbind(0)  # per-step views, made once
        if self._actions is not None:
            actions = self._actions
            self._actions = None
            self._allocate_actions(actions[0], rows)
            cast(Tensor, self._actions)[: len(actions)] = actions  # set by _allocate_actions
        self.capacity = rows

    def _allocate_actions(self, action: Tensor, rows: int) -> None:
        with torch.inference_mode(False):
            self._actions = torch.zeros((rows, *action.shape), dtype=action.dtype)
            self._actions_np = self._actions.numpy()

    def reset(self, seed: int | list[int] | None = None) -> None:
        """Reset every env (unfinished episodes are dropped) and the episode accumulators."""
        # VectorEnv.reset is typed int | None; Sync/AsyncVectorEnv take one seed per env
        obs, info = self.env.reset(seed=seed)  # type: ignore[arg-type]
        mask = combine_masks(*self._layout.split(obs)[1:], info_action_mask(info))
        if mask is not None and self._mask_sizes is None:
            self._mask_sizes = sections(self.env.single_action_space)
            self._allocate(self.capacity)
        self._next_obs, self._next_mask = self._observe(obs, info, None)
        check_env_output(self._next_obs, np.zeros(self.num_envs), "at reset")
        self._last_done[:] = False
        self._carry_return[:] = 0.0
        self._carry_length[:] = 0

    def collect(self) -> Rollout:
        """Run ``num_steps`` steps of every env, continuing from where the last call stopped
        (``whole_episodes``: on to the end of the running episodes, then reset)."""
        if self._next_obs is None:
            self.reset(self.seed)
        self._finals = []
        with torch.inference_mode():
            for t in range(self.num_steps):
                try:
                    self._step(t)
                except (RuntimeError, ValueError) as err:
                    self._explain(t, err)
                    raise
            rows = self._run_on() if self.whole_episodes else self.num_steps
            obs, rewards = self._np["obs"], self._np["rewards"]  # env outputs, once per rollout
            check_env_output(obs[1:rows], rewards[: rows - 1], self._where)
            check_env_output(self._next_obs, rewards[rows - 1], self._where(rows - 1))
            boot_obs, boot_index = self._bootstrap(rows)
            boot_values = self.policy.value(boot_obs.to(self.device)).cpu()
        self.global_step += rows * self.num_envs
        rollout = self._assemble(rows, boot_obs, boot_index, boot_values)
        if self.whole_episodes:
            self.reset()
        return rollout

    def _step(self, t: int) -> None:
        """One vector step: act on the current observations, store the transition in row t.

        Only what must happen per step is here; the finiteness check, validity masks, bootstrap
        values and episode statistics are computed for all rows at once.
        """
        arr, policy = self._np, self.policy
        arr["obs"][t] = self._next_obs
        obs = self._obs_rows[t] if self._on_cpu else self._obs_rows[t].to(self.device)
        policy.update_obs_stats(obs)
        if self._mask_sizes is None:
            action, log_prob, value = policy.step(obs)
        else:
            arr["action_masks"][t] = self._next_mask
            mask = self._buf["action_masks"][t].to(self.device)
            action, log_prob, value = policy.step(obs, mask)
        if self._actions is None:
            self._allocate_actions(action, self.capacity)
        if self._on_cpu:  # numpy writes are several times cheaper than torch indexing
            self._actions_np[t] = action.numpy()
            arr["log_probs"][t] = log_prob.numpy()
            arr["values"][t] = value.numpy()
        else:
            assert self._actions is not None  # allocated just above
            self._actions[t] = action
            self._buf["log_probs"][t] = log_prob
            self._buf["values"][t] = value
        next_obs, reward, terminated, truncated, info = self.env.step(policy.to_env(action))
        arr["rewards"][t] = reward
        arr["terminated"][t] = terminated
        arr["truncated"][t] = truncated
        if self._same_step and truncated.any():  # V(final obs) bootstraps only truncations
            self._keep_finals(t, truncated & ~terminated, info)
        self._next_obs, self._next_mask = self._observe(next_obs, info, t + 1)

    def _explain(self, t: int, err: Exception) -> None:
        """Step ``t`` failed with ``err``: the finiteness check is deferred to the end of the
        rollout, so first check the env outputs of rows 0..t (a NaN observation makes the next
        ``policy.step`` fail, e.g. a Bernoulli head); then name an observation of the wrong shape
        (gymnasium's vector env fails on it with numpy's bare message). Else return: re-raise."""
        obs, rewards = self._np["obs"], self._np["rewards"]
        check_env_output(obs[1 : t + 1], rewards[:t], self._where)
        if isinstance(err, ValueError) and "wrong shape" in str(err):
            raise ValueError(
                f"env: step() {self._where(t)} returned an observation that does not fit "
                f"observation_space {self.env.single_observation_space} ({err})"
            ) from err

    def _observe(
        self, obs: Any, info: dict[str, Any], t: int | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The features of the observations of rollout step ``t`` (None: a reset) and their
        checked action mask (None when the env gives none)."""
        if self._layout.is_box and self._mask_sizes is None and MASK_KEY not in info:
            return obs, None
        features, mask = self._layout.split(obs)
        mask = combine_masks(mask, info_action_mask(info))
        where = "at reset" if t is None else self._where(t)
        if (mask is None) != (self._mask_sizes is None):
            raise ValueError(f"env: an action mask {where} but not at reset, or the reverse; "
                             "an env with masks must give one with every observation")  # fmt: skip
        if mask is not None:
            assert self._mask_sizes is not None  # the test above: both or neither
            check_action_mask(mask, self._mask_sizes, where)
        return features, mask

    def _where(self, t: int) -> str:
        return f"at rollout step {t} (global step {self.global_step + t * self.num_envs})"

    def _keep_finals(self, t: int, truncated: np.ndarray, info: dict[str, Any]) -> None:
        """SAME_STEP: keep the final observations of the envs truncated at step t."""
        if "final_obs" not in info:
            raise ValueError(f"env: truncated at step {t} but info has no 'final_obs' (SAME_STEP)")
        index = np.flatnonzero(truncated & info["_final_obs"])
        if len(index):
            final = np.stack([self._layout.flatten(o) for o in info["final_obs"][index]])
            check_env_output(final, np.zeros(len(index)), self._where(t), index)
            self._finals.append((t, index, final))

    def _run_on(self) -> int:
        """``whole_episodes``: step on until each env's episode running at row T-1 has ended;
        record that end in ``_ended`` and return the number of rows."""
        t, arr = self.num_steps, self._np
        pending = ~(arr["terminated"][t - 1] | arr["truncated"][t - 1])
        self._ended[:] = np.where(pending, -1, t - 1)
        while pending.any():
            if t == self.num_steps + MAX_RUN_ON:
                raise ValueError(
                    f"env: whole_episodes: the episodes of envs {np.flatnonzero(pending).tolist()} "
                    f"did not end within {MAX_RUN_ON:,} steps past the rollout; without a critic "
                    "the episodes must end (add a time limit) or use a learned baseline"
                )
            if t == self.capacity:
                self._allocate(2 * t)
                arr = self._np
            self._step(t)
            ends = pending & (arr["terminated"][t] | arr["truncated"][t])
            self._ended[ends] = t
            pending &= ~ends
            t += 1
        return t

    def _bootstrap(self, rows: int) -> tuple[Tensor, Tensor]:
        """The rollout's bootstrap observations and their flat indices (see :class:`Rollout`):
        SAME_STEP's final observations, and the next observation of every env at the last row
        (unless a final observation stands there)."""
        B = self.num_envs
        last = np.ones(B, dtype=bool)
        index, obs = [], []
        for t, envs, final in self._finals:
            index.append(t * B + envs)
            obs.append(final)
            if t == rows - 1:
                last[envs] = False
        index.append((rows - 1) * B + np.flatnonzero(last))
        obs.append(np.asarray(self._next_obs, dtype=np.float32)[last])
        return torch.from_numpy(np.concatenate(obs)), torch.from_numpy(np.concatenate(index))

    def _assemble(
        self, rows: int, boot_obs: Tensor, boot_index: Tensor, boot_values: Tensor
    ) -> Rollout:
        """Copy the first ``rows`` rows of the buffers into a Rollout on ``device``."""
        buf = {k: v[:rows] for k, v in self._buf.items()}
        next_values = next_values_of(buf["values"], boot_values, boot_index, buf["terminated"])
        done = self._np["terminated"][:rows] | self._np["truncated"][:rows]
        valid = np.ones(done.shape, dtype=bool)
        if not self._same_step:  # the step after a done is NEXT_STEP's reset transition
            np.logical_not(done[:-1], out=valid[1:])
            np.logical_not(self._last_done, out=valid[0])
        if self.whole_episodes:  # what follows each env's last episode is dropped
            valid &= np.arange(rows)[:, None] <= self._ended
        returns, lengths = self._episode_stats(done, valid)
        device = self.device
        assert self._actions is not None  # allocated at the first step
        return Rollout(
            actions=self._actions[:rows].to(device, copy=True),
            next_values=next_values.to(device),
            valid=torch.from_numpy(valid).to(device),
            bootstrap_obs=boot_obs.to(device),
            bootstrap_index=boot_index.to(device),
            episode_returns=returns,
            episode_lengths=lengths,
            **{k: v.to(device, copy=True) for k, v in buf.items()},
        )

    def _episode_stats(self, done: np.ndarray, valid: np.ndarray) -> tuple[list[float], list[int]]:
        """Return and length of every episode ending at a valid row, in (step, env) order.

        Running totals per env (cumulative sums over the rows, plus what carried over from
        earlier rollouts), minus their value at the env's previous episode end.
        """
        rows = len(done)
        totals = (
            self._carry_return + np.cumsum(self._np["rewards"][:rows], 0, dtype=np.float64),
            self._carry_length + np.cumsum(valid, 0),
        )
        ends = np.where(done, np.arange(rows)[:, None], -1)
        before = np.maximum.accumulate(np.concatenate([np.full_like(ends[:1], -1), ends]), 0)[:-1]
        since = [
            total - np.where(before >= 0, np.take_along_axis(total, before.clip(0), 0), 0)
            for total in totals
        ]
        self._carry_return = np.where(done[-1], 0.0, since[0][-1])
        self._carry_length = np.where(done[-1], 0, since[1][-1])
        self._last_done = done[-1].copy()
        counted = done & valid
        return since[0][counted].tolist(), since[1][counted].tolist()


def check_env_output(
    obs: object,
    reward: object,
    where: str | Callable[[int], str],
    env_index: Sequence[int] | np.ndarray | None = None,
) -> None:
    """A vector env's observations and rewards are finite (numpy arrays).

    ``reward`` is ``(B,)`` (one vector step) or ``(T, B)`` (T steps, time-major), ``obs`` the
    same leading shape and then the observation's. Fast path: NaN and inf propagate through a
    sum of squares, so one dot product per array clears the common case. Otherwise the error
    names what is bad (observation or reward), where (``where``, or ``where(t)`` for the step
    ``t`` of the first bad entry, called only on failure, e.g. "at rollout step 3 (global step
    48)") and the env's index (``b``, or ``env_index[b]`` when given).
    """
    obs, reward = np.asarray(obs), np.asarray(reward)
    flat_obs, flat_reward = obs.reshape(-1), reward.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow only sends us below
        if math.isfinite(flat_reward @ flat_reward) and math.isfinite(flat_obs @ flat_obs):
            return
    bad_obs = np.asarray(~np.isfinite(obs.astype(np.float64).reshape(reward.size, -1)).all(1))
    bad = ~np.isfinite(flat_reward.astype(np.float64)) | bad_obs
    if not bad.any():  # the sum of squares overflowed: the data is finite
        return
    i = int(np.flatnonzero(bad)[0])
    t, b = divmod(i, reward.shape[-1]) if reward.ndim else (0, 0)
    index = int(env_index[b]) if env_index is not None else b
    what = "observation" if bad_obs[i] else "reward"
    value = obs.reshape(reward.size, *obs.shape[reward.ndim :])[i] if bad_obs[i] else flat_reward[i]
    where = where(t) if callable(where) else where
    raise ValueError(f"env: NaN or inf {what} {where}, env index {index}: {value}")
