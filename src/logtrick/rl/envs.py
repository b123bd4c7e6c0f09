"""Vector environments for the collector: built from an id, an instance or a factory.

:func:`make_env` accepts whatever names an environment (an id ``gymnasium.make`` accepts,
``"ns/Env-v0"`` and ``"module:Env-v0"`` included, a ``gymnasium.Env``, a ``VectorEnv`` or a
zero-argument factory) and returns a ``VectorEnv``; :func:`autoreset_mode` reads the autoreset
mode the collector must follow (NEXT_STEP or SAME_STEP; DISABLED is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import VectorizeMode
from gymnasium.vector import AutoresetMode, VectorEnv

from logtrick.checks import check_nonempty_str
from logtrick.rl.errors import import_extra

__all__ = ["EnvPoolEnv", "autoreset_mode", "env_call", "make_env"]

_VECTOR_CALLS = ("step", "reset", "step_wait", "reset_wait", "_raise_if_errors")


_MODES = ("sync", "async", "vector_entry_point", "envpool")


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
        vectorization_mode: ``"sync"``, ``"async"`` (one process per env),
            ``"vector_entry_point"`` (the id's own vectorised implementation) or ``"envpool"``
            (an id EnvPool registers, stepped by its C++ threads: :class:`EnvPoolEnv`).
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
    kwargs: dict[str, Any] = (
        {} if autoreset_mode is None else {"autoreset_mode": AutoresetMode(autoreset_mode)}
    )
    if isinstance(env, VectorEnv):
        if num_envs not in (None, env.num_envs):
            raise ValueError(f"num_envs: the vector env has {env.num_envs} envs, got {num_envs}")
        envs = env
    elif vectorization_mode == "envpool":
        if not isinstance(env, str):
            raise TypeError(f"env: EnvPool makes envs from an id, got {type(env).__name__}")
        if autoreset_mode not in (None, AutoresetMode.NEXT_STEP, "NextStep"):
            raise ValueError(
                f"autoreset_mode: EnvPool resets NEXT_STEP only, got {autoreset_mode!r}"
            )
        envs = EnvPoolEnv(env, num_envs or 1)
    elif isinstance(env, str):
        check_env_id("env", env)
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


def autoreset_mode(env: VectorEnv) -> AutoresetMode:
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


def check_env_id(name: str, value: object) -> object:
    """``value`` is an id ``gymnasium.make`` accepts; returns its ``EnvSpec``.

    ``"module:Env-v0"`` imports ``module`` first (which registers the env), as ``gymnasium.make``
    does; ``"ns/Env-v0"`` is a namespaced id. An unknown id lists the closest registered ones.
    """
    import difflib
    import importlib

    import gymnasium as gym

    env_id = check_nonempty_str(name, value)
    module, sep, env_name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"{name}: cannot import {module!r} for {env_id!r} ({err})") from None
    try:
        return gym.spec(env_name)
    except gym.error.Error as err:
        close = difflib.get_close_matches(env_name, list(gym.registry), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"{name}: unknown environment id {env_id!r} ({err}){hint}") from None


class EnvPoolEnv(VectorEnv):
    """EnvPool's Gymnasium vector env, seeded as Gymnasium's is.

    EnvPool 1.2.5 already follows Gymnasium's NEXT_STEP autoreset (the step after a done returns
    the reset observation, reward 0, the action ignored) and reports time limits as
    ``truncated``; but it takes seeds only when the pool is made (``reset(seed=...)`` is
    ignored). Here a seeded reset makes the pool again with env ``i`` seeded ``seed + i`` (or
    ``seed[i]``), as ``SyncVectorEnv.reset`` seeds its envs. ``kwargs`` go to
    ``envpool.make_gymnasium`` (e.g. ``max_episode_steps``). Extra: ``logtrick[envpool]``.
    """

    def __init__(self, env_id: str, num_envs: int, **kwargs: Any) -> None:
        envpool = import_extra("envpool", "envpool", "vector_env", "'envpool'")
        if env_id not in envpool.list_all_envs():
            raise ValueError(f"env: {env_id!r} is not an EnvPool id (its MuJoCo ids are "
                             "e.g. Hopper-v4, Hopper-v5; see envpool.list_all_envs())")  # fmt: skip
        self._make = lambda seeds: envpool.make_gymnasium(env_id, num_envs=num_envs,
                                                          env_seed=seeds, **kwargs)  # fmt: skip
        self.env_id, self.num_envs = env_id, num_envs
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self._pool = self._make(list(range(num_envs)))
        self.single_observation_space = self._pool.observation_space
        self.single_action_space = self._pool.action_space
        batch = gym.vector.utils.batch_space
        self.observation_space = batch(self.single_observation_space, num_envs)
        self.action_space = batch(self.single_action_space, num_envs)

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: expected {self.num_envs} seeds, got {len(seeds)}")
            self._pool.close()
            self._pool = self._make([int(x) for x in seeds])
        return self._pool.reset()

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        return self._pool.step(actions)

    def close(self, **kwargs: Any) -> None:
        self._pool.close()


def env_call(tb: TracebackType | None) -> tuple[str, int | None, str | None] | None:
    """``(method, sub-env index, its class name)`` of the vector env call on the traceback
    that raised (index and class ``None`` where unknown); ``None`` if no vector env's
    ``reset`` / ``step`` is on it."""
    found = None
    while tb is not None:
        frame = tb.tb_frame
        module, code = frame.f_globals.get("__name__", ""), frame.f_code.co_name
        if module.startswith("gymnasium.vector") and code in _VECTOR_CALLS:
            index = frame.f_locals.get("i", frame.f_locals.get("index"))
            index = index if isinstance(index, int) else None
            envs = getattr(frame.f_locals.get("self"), "envs", None)
            cls = None
            if index is not None and isinstance(envs, list) and index < len(envs):
                cls = type(envs[index].unwrapped).__name__
            method = "step" if "step" in code else "reset" if "reset" in code else "step"
            found = (method, index, cls) if index is not None or found is None else found
        tb = tb.tb_next
    return found
