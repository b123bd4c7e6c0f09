"""The Python API: an :class:`Agent` learns, predicts, evaluates, saves and loads.

``rl.Agent`` is the one path to training: :func:`train` (``rl.train(config, resume=...)``),
:func:`load` and the ``logtrick train`` / ``evaluate`` commands are thin layers over it. It
assembles a run with :mod:`logtrick.rl.build` and runs the one loop of :mod:`logtrick.rl.loop`.

```python
from logtrick import rl
agent = rl.Agent("CartPole-v1", algo="ppo", seed=0)   # presets apply; keywords are Config fields
agent.learn(100_000, callback=fn)                      # fn(metrics) -> True stops
action = agent.predict(obs, deterministic=True)        # numpy in, numpy out
mean, std = agent.evaluate(episodes=20)
agent.save("agent.pt"); agent = rl.Agent.load("agent.pt")
```

Nothing is written before training starts: the config is checked and the envs and policy are
built when the Agent is made, the run directory is created by the first :meth:`Agent.learn`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from logtrick.checks import check_known_name, check_positive_int, check_seed
from logtrick.rl import distributed, runs
from logtrick.rl.build import make_learner, new_collector, target_return
from logtrick.rl.checkpoint import (
    Counters,
    checkpoint_state,
    finished_note,
    load_config,
    load_policy_state,
    merge_config,
    read_agent_file,
    restore,
)
from logtrick.rl.config import Config, preset
from logtrick.rl.env_checks import check_custom_env, env_errors, numbers, probe_env
from logtrick.rl.envs import make_env
from logtrick.rl.errors import DivergenceError
from logtrick.rl.loop import Callback, Session, evaluate, floats, run_loop
from logtrick.rl.policies import ActorCritic
from logtrick.rl.presets import is_custom_env
from logtrick.rl.runs import check_not_a_directory
from logtrick.rl.tracking import require_wandb

__all__ = ["Agent", "TrainResult", "load", "resume_agent", "train"]

EnvLike = str | gym.Env | Callable[[], gym.Env]
FORMAT = "logtrick-agent-1"
"""The ``format`` entry of a file written by :meth:`Agent.save`."""


@dataclass
class TrainResult:
    """What ``train`` returns."""

    policy: ActorCritic
    history: list[dict[str, float]]
    run_dir: Path
    solved_at_step: int | None = None
    """First env step at which an evaluation reached the target return (``None``: never)."""
    solved_at_time: float | None = None
    """Training wall-clock (s, evaluation excluded) at that evaluation."""
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    signal: int = 0
    """The signal that stopped the run (``signal.SIGTERM``: preempted; SIGINT: Ctrl-C), else 0."""


def _env_source(env: EnvLike) -> str | Callable[[], gym.Env]:
    """What envs are made from: an id, or a zero-argument factory (an instance is deep-copied,
    once per env: the instance itself is never stepped). A custom env (not an id) passes
    Gymnasium's env_checker first (:func:`~logtrick.rl.env_checks.check_custom_env`)."""
    if isinstance(env, str):
        return env
    if isinstance(env, gym.Env):
        try:
            copy.deepcopy(env)
        except Exception as err:
            raise TypeError(
                f"env: the instance {env} cannot be copied ({err}); pass a "
                "zero-argument factory instead"
            ) from err
        check_custom_env(partial(copy.deepcopy, env), type(env.unwrapped).__name__)
        return partial(copy.deepcopy, env)
    if callable(env):
        check_custom_env(env, getattr(env, "__qualname__", None) or type(env).__name__)
        return env
    raise TypeError(
        f"env: expected an env id, a gymnasium.Env or a zero-argument factory, "
        f"got {type(env).__name__}"
    )


class Agent:
    """A policy-gradient agent on one environment: learn, predict, evaluate, save, load.

    Args:
        env: a Gymnasium env id, a ``gymnasium.Env`` instance (deep-copied for each parallel
            env) or a zero-argument factory returning one.
        algo: ``reinforce``, ``a2c``, ``ppo`` or ``npg``; ``None``: the env's default (npg on
            CartPole-v1, else ppo).
        policy: your own ``nn.Module`` with ``distribution(obs)`` and ``value(obs)`` (see
            :mod:`logtrick.rl.module_policy`); ``None`` builds the MLP actor-critic.
        **fields: any :class:`~logtrick.rl.Config` field; the others come from the env's preset
            or defaults (:func:`~logtrick.rl.preset`).

    Raises:
        TypeError: a keyword that is not a Config field (with close matches), a bad ``env`` or
            ``policy``.
        ValueError: a bad field value or an unknown env id.
    """

    def __init__(
        self,
        env: EnvLike = "CartPole-v1",
        algo: str | None = None,
        *,
        policy: torch.nn.Module | None = None,
        **fields: Any,
    ) -> None:
        known = [f.name for f in dataclasses.fields(Config) if f.name not in ("env", "algo")]
        for name in fields:  # TypeError, as for any unexpected keyword
            check_known_name(name, known, "keyword of Agent: not a Config field", TypeError)
        source = _env_source(env)
        if policy is not None and "normalize_obs" not in fields:
            fields["normalize_obs"] = False  # the network normalises its inputs itself
        self._setup(preset(env, algo, **fields), source, policy)

    @classmethod
    def from_config(
        cls, config: Config, env: EnvLike | None = None, policy: torch.nn.Module | None = None
    ) -> Agent:
        """An agent for ``config`` exactly (no presets applied). ``env`` is needed when
        ``config.env`` describes an instance or factory (``ValueError`` otherwise)."""
        if env is None:
            if is_custom_env(config.env):
                raise ValueError(
                    f"env: this agent was trained on {config.env[len('custom:') :]!r}, an env "
                    "given as an instance or factory, which cannot be saved; pass it again "
                    "with env=..."
                )
            env = config.env
        agent = cls.__new__(cls)
        agent._setup(config, _env_source(env), policy)
        return agent

    def _setup(self, config: Config, source: Any, policy: torch.nn.Module | None) -> None:
        """Build the policy from one env; the training envs wait for :meth:`learn`."""
        self.ranks = distributed.init_ranks(config)  # torchrun: join the process group
        probe = probe_env(source, config.env)
        try:
            self.learner = distributed.place(make_learner(config, probe, policy), self.ranks)
        finally:
            probe.close()
        self.config, self.env, self.custom_policy = config, source, policy is not None
        self.counters = Counters.start(config)
        self.history: list[dict[str, float]] = []
        self.run_dir: Path | None = None
        self.signal = 0
        """The signal that stopped the last :meth:`learn` (SIGINT, SIGTERM), else 0."""
        self.finished: str | None = None
        """A resumed run that has nothing left to train: what to do instead."""
        self._envs: Any = None
        self._collector: Any = None

    @property
    def policy(self) -> torch.nn.Module:
        """The policy being trained (an :class:`~logtrick.rl.ActorCritic`, or your network
        wrapped in a :class:`~logtrick.rl.module_policy.ModulePolicy`)."""
        return self.learner.policy

    def learn(self, steps: int | None = None, callback: Callback | None = None) -> Agent:
        """Train for ``steps`` more env steps (``None``: on to ``config.total_steps``).

        The first call creates the run directory (``config.out``/``config.name``); later calls
        continue the same run: same optimizer, the learning rate falling on from where it was
        to 0 at the new end (``anneal_lr``). Training also stops at a Ctrl-C, after an
        evaluation that reaches the env's threshold (``stop_at_threshold``), or when
        ``callback`` returns true.

        Args:
            steps: env steps to add, summed over the parallel envs (rounded up to rollouts).
            callback: ``fn(metrics: dict) -> bool``, called after every update with its logged
                row (the evaluation's return in ``eval_return`` when one ran, else NaN).

        Returns:
            ``self``.
        """
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable, got {type(callback).__name__}")
        if self.config.wandb:  # before anything is written
            require_wandb()
        self._set_budget(None if steps is None else check_positive_int("steps", steps))
        first = self.run_dir is None
        if self._envs is None:
            self._start_envs()
        if not self.ranks.writer:  # torchrun: only rank 0 writes the run directory
            with self._closed_on_failure(), tempfile.TemporaryDirectory() as scratch:
                self._run(Path(scratch), True, callback)
            return self
        if self.finished is not None and steps is None:
            warnings.warn(self.finished, stacklevel=2)
            return self
        if first:
            self.run_dir = runs.new_run_dir(self.config.out, self.config.name)
        assert self.run_dir is not None  # set just above on the first call
        try:
            with self._closed_on_failure(), runs.lock_run_dir(self.run_dir):
                runs.write_config(self.run_dir, self.config.to_dict())
                self._run(self.run_dir, first, callback)
        except BaseException as err:
            if first and not isinstance(err, DivergenceError):  # its message says what is kept
                self._remove_stub()
            raise
        return self

    @contextlib.contextmanager
    def _closed_on_failure(self) -> Iterator[None]:
        """Close the envs (and collecting processes) when the block fails: a failed run's
        envs end with it, on every rank."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def _start_envs(self) -> None:
        """The training envs and their collector, reset; an env's failure is an EnvError."""
        local = distributed.local_envs(self.config, self.ranks)
        pool = self.config.vector_env == "envpool"
        mode = "envpool" if pool else self.config.vectorization_mode
        with env_errors(self.config.env, "when the training envs were made and reset"):
            self._envs = make_env(self.env, num_envs=local, vectorization_mode=mode)
            self._collector = new_collector(self.learner, self._envs, self.counters, self.env)

    def _remove_stub(self) -> None:
        """Remove a new run directory that never got a checkpoint: a stub, not a run."""
        if self.run_dir is not None and not (self.run_dir / runs.CHECKPOINT).exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def _run(self, run_dir: Path, first: bool, callback: Callback | None) -> None:
        """The loop of :func:`~logtrick.rl.loop.run_loop`, writing into ``run_dir``."""
        target = target_return(self.config, self.env)
        session = Session(
            self.learner, self._collector, self.counters, self.env, run_dir, self.history, target
        )
        self.signal = run_loop(session, first, callback)
        self.finished = None

    def _set_budget(self, steps: int | None) -> None:
        """``config.total_steps`` for this call; the schedule extends to it on a later call."""
        total = self.config.total_steps if steps is None else self.counters.global_step + steps
        config = dataclasses.replace(self.config, total_steps=total)
        if self.counters.global_step == 0:
            self.counters = Counters.start(config)
        else:
            self.counters.extend(self.config, config)
        self.config = self.learner.config = config

    def predict(self, obs: Any, deterministic: bool = True, action_mask: Any = None) -> np.ndarray:
        """The action for one observation, or actions for a batch (the shape decides).

        Args:
            obs: ``observation_space.shape`` or ``(N, *observation_space.shape)``, array-like (a
                dict / tuple of them for ``Dict`` / ``Tuple`` spaces; a ``Dict`` observation's
                ``"action_mask"`` key is honoured).
            deterministic: the most likely allowed action (Box: the mean); ``False`` samples.
            action_mask: bool ``(n,)`` or ``(N, n)`` allowed actions (e.g. the env's
                ``info["action_mask"]``); masked actions are never returned.

        Returns:
            numpy actions as the env takes them: ``action_shape``, or ``(N, *action_shape)``.
        """
        obs = numbers("obs", obs)
        return self.learner.policy.act(obs, deterministic, action_mask)

    def evaluate(
        self, episodes: int = 20, seed: int | None = None, deterministic: bool = True
    ) -> tuple[float, float]:
        """Mean and std of the returns of ``episodes`` episodes (reset seeds ``seed + i``;
        ``None``: ``config.seed + 10_000``, the seeds of the evaluations during training)."""
        check_positive_int("episodes", episodes)
        seed = self.config.seed + 10_000 if seed is None else check_seed("seed", seed)
        return evaluate(
            self.learner.policy, self.env, episodes, seed=seed, deterministic=deterministic
        )

    @property
    def result(self) -> TrainResult:
        """What the training so far gives (:class:`~logtrick.rl.TrainResult`)."""
        c, solved = self.counters, self.counters.solved_at_step >= 0
        return TrainResult(
            self.learner.policy,
            self.history,
            self.run_dir or Path(),
            c.solved_at_step if solved else None,
            c.solved_at_time if solved else None,
            self.interrupted,
            signal=self.signal,
        )

    @property
    def interrupted(self) -> bool:
        """Whether a signal (Ctrl-C, SIGTERM) stopped the last :meth:`learn`."""
        return self.signal != 0

    def save(self, path: str | Path) -> None:
        """Write the agent (config, weights, optimizer, counters) to ``path``, atomically; a
        dict of tensors and numbers, loadable with ``torch.load(weights_only=True)``. Missing
        parent directories are created; a directory as ``path`` is an error."""
        state = {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "custom_policy": self.custom_policy,
            "checkpoint": checkpoint_state(self.learner, self.counters),
        }
        path = Path(check_not_a_directory("path", path))
        path.parent.mkdir(parents=True, exist_ok=True)  # like the run directory's parents
        runs.save_checkpoint(path, state)  # atomic, with checksums

    @classmethod
    def load(
        cls, path: str | Path, env: EnvLike | None = None, policy: torch.nn.Module | None = None
    ) -> Agent:
        """The agent saved at ``path``, ready to predict, evaluate or learn on.

        Args:
            path: a file written by :meth:`save`.
            env: needed only when the agent was made from an instance or factory.
            policy: needed only when it was made with ``policy=`` (a network of the same
                architecture; its weights are replaced).

        Raises:
            CheckpointError: not an agent file, or one that does not fit.
            ValueError: ``env`` or ``policy`` is needed but missing.
        """
        state = read_agent_file(path, FORMAT)
        if state["custom_policy"] and policy is None:
            raise ValueError(
                f"policy: {path} was trained with your own network; pass one of "
                "the same architecture: Agent.load(path, policy=net)"
            )
        agent = cls.from_config(Config.from_dict(state["config"]), env, policy)
        agent.counters = restore(agent.learner, state["checkpoint"])
        return agent

    def close(self) -> None:
        """Close the training envs (made again by a later :meth:`learn`)."""
        getattr(self._collector, "close", lambda: None)()  # Ray workers
        if self._envs is not None:
            self._envs.close()
        self._envs = self._collector = None

    def __repr__(self) -> str:
        """``Agent(env=..., algo=..., steps=trained/budget, run_dir=...)``: what it learns on and
        how far it got (``run_dir=None``: no ``learn`` yet)."""
        c, config = self.counters, self.config
        net = getattr(self.policy, "module", self.policy)  # a ModulePolicy wraps your network
        policy = f", policy={type(net).__name__}" if self.custom_policy else ""
        run_dir = None if self.run_dir is None else str(self.run_dir)
        return (
            f"Agent(env={config.env!r}, algo={config.algo!r}{policy}, "
            f"steps={c.global_step:,}/{config.total_steps:,}, run_dir={run_dir!r})"
        )

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resume_agent(run_dir: Path, config: Config | None) -> Agent:
    """An agent continuing the run in ``run_dir`` from its checkpoint (its metrics up to it)."""
    saved = load_config(run_dir)
    config = saved if config is None else merge_config(saved, config, run_dir)
    writer = distributed.ranks_from_env().writer  # ranks > 0 read the checkpoint only
    with runs.lock_run_dir(run_dir) if writer else contextlib.nullcontext():
        state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
        agent = Agent.from_config(config)
        agent.counters = restore(agent.learner, state)
    distributed.seed_rank(config, agent.ranks, agent.counters.update)  # restore set rank 0's
    c = agent.counters
    if config.total_steps < c.global_step:
        raise ValueError(
            f"total_steps: {config.total_steps:,} is below the "
            f"{c.global_step:,} steps the run has taken"
        )
    agent.finished = finished_note(run_dir, config, c)
    if agent.finished is None:
        c.extend(saved, config)
    if agent.learner.reward_scale is not None:  # the envs are reset: new episodes
        agent.learner.reward_scale.new_episodes()
    rows = runs.read_metrics(run_dir / runs.METRICS) if (run_dir / runs.METRICS).exists() else []
    agent.history = [floats(r) for r in rows if int(float(r["update"])) <= c.update]
    agent.run_dir = run_dir
    return agent


def load(
    run_dir: str | Path, env: EnvLike | None = None, policy: torch.nn.Module | None = None
) -> torch.nn.Module:
    """The policy saved in ``run_dir`` (built from its ``config.json``, weights loaded safely).

    ``env`` is needed only for a run on an env given as an instance or factory, ``policy`` only
    for a run with your own network.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.json``.
        CheckpointError: no usable checkpoint, or one that does not fit the config's policy.
        ValueError: ``env`` is needed but missing.
    """
    run_dir = Path(run_dir)
    agent = Agent.from_config(load_config(run_dir), env, policy)
    state = runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    load_policy_state(agent.learner.policy, state, agent.config)
    agent.learner.policy.eval()
    return agent.learner.policy


def train(config: Config | None = None, resume: str | Path | None = None) -> TrainResult:
    """Train a policy as ``config`` says (``Agent.from_config(config).learn()``).

    ``resume`` continues the run in that directory from its last checkpoint. ``config`` may then
    be omitted (the saved config is used) or differ from the saved one only in
    :data:`~logtrick.rl.config.RESUME_FIELDS` (e.g. a larger ``total_steps`` extends the run);
    anything else is a ``ValueError``. A first Ctrl-C stops at the end of the current update and
    writes a checkpoint.

    Raises:
        ValueError: bad or conflicting settings, unknown env id (before anything is written).
        UnsupportedSpaceError: an observation or action space the policy cannot handle.
        RunLockedError: another process is writing to the run directory.
        CheckpointError: ``resume`` has no usable checkpoint.
        DivergenceError: the loss, a gradient or the parameters became NaN or inf.
    """
    agent = (
        resume_agent(Path(resume), config)
        if resume is not None
        else Agent.from_config(config or Config())
    )
    try:
        return agent.learn().result
    finally:
        agent.close()
