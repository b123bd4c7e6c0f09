"""An env that breaks is the user's to fix: say which env, where, and what, in one line.

* :func:`check_custom_env` runs Gymnasium's ``env_checker`` on an env given as an instance or
  factory (registered ids are Gymnasium's or their authors' to check) before anything trains,
  and turns what it finds into one :class:`~logtrick.rl.errors.EnvError` line; its warnings are
  shown once per env and message.
* :func:`env_failure` turns an exception raised inside a vector env's ``reset`` / ``step`` into
  an ``EnvError`` naming the env, the env index and what was kept.
* :func:`episode_step_limit` bounds a loop over the steps of an episode: the env's own
  ``max_episode_steps``, else :data:`DEFAULT_EPISODE_STEPS`.
* :func:`numbers`: an observation given to ``Agent.predict`` is numbers, or a ``TypeError``
  naming it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from logtrick.rl.envs import env_call, make_env
from logtrick.rl.errors import EnvError, LogtrickError

__all__ = [
    "DEFAULT_EPISODE_STEPS",
    "check_custom_env",
    "env_errors",
    "env_failure",
    "episode_step_limit",
    "numbers",
    "probe_env",
]

DEFAULT_EPISODE_STEPS = 10_000
"""Steps after which an evaluation episode of an env without ``max_episode_steps`` (no
``TimeLimit``) is cut, with a warning: an env that never ends must not hang the run."""
_FATAL = ("reward returned by `step()` must be", "step()` method is not a tuple")
"""``env_checker`` warnings that training cannot go on with (they fail later, obscurely)."""
_HARMLESS = ("is different from the unwrapped version", "value is infinity", "value is -infinity")
"""``env_checker`` warnings about how it is called here, or about what many good envs do
(unbounded Box observations), not worth a line each."""
_COLOR = re.compile(r"\x1b\[[0-9;]*m")
_shown: set[tuple[str, str]] = set()


def _first_sentence(message: str) -> str:
    text = " ".join(_COLOR.sub("", message).replace("WARN: ", "").split())
    return text.split(". See https")[0].rstrip(".")


def check_custom_env(make: Callable[[], gym.Env], name: str) -> None:
    """Run ``gymnasium.utils.env_checker.check_env`` on a fresh env from ``make``.

    Raises:
        EnvError: the env cannot be made, or breaks Gymnasium's API (``reset`` returning the
            observation only, a reward that is an array, a space it rejects, ...).
    """
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            env = make()
        except Exception as err:  # the user's constructor
            raise EnvError(f"env: making {name} raised {_describe(err)}") from err
        if not isinstance(env, gym.Env):
            return  # not an env at all: make_env says so, naming the factory
        if "<" in name:  # a lambda: the env's class says more
            name = f"{type(getattr(env, 'unwrapped', env)).__name__} (made by {name})"
        try:
            check_env(env, skip_render_check=True, skip_close_check=True)
        except Exception as err:
            if "determinis" not in str(err):  # a seed it ignores: a warning, below
                raise EnvError(
                    f"env: {name} does not follow Gymnasium's Env API "
                    f"(gymnasium env_checker): {_describe(err)}"
                ) from err
            warnings.warn(str(err), stacklevel=1)
        finally:
            env.close()
    messages = [_first_sentence(str(w.message)) for w in caught]
    fatal = [m for m in messages if any(f in m for f in _FATAL)]
    if fatal:
        raise EnvError(
            f"env: {name} does not follow Gymnasium's Env API (gymnasium env_checker): {fatal[0]}"
        )
    for message in messages:
        if not any(h in message for h in _HARMLESS) and (name, message) not in _shown:
            _shown.add((name, message))
            warnings.warn(f"env {name}: {message} (gymnasium env_checker)", stacklevel=3)


def _describe(err: BaseException) -> str:
    text = _first_sentence(str(err)) or "no message"
    return f"{type(err).__name__}: {text}"


@contextlib.contextmanager
def env_errors(name: str, when: str, kept: str = "") -> Iterator[None]:
    """In the block, an exception raised in a vector env's ``reset`` / ``step`` becomes an
    :class:`EnvError` naming the env (``name``), the method, the env index, ``when`` and what
    the run ``kept``; other exceptions (bugs of ours) keep their tracebacks."""
    try:
        yield
    except EnvError:
        raise
    except Exception as err:
        failure = env_failure(err, name, when, kept)
        if failure is None:
            raise
        raise failure from err


def env_failure(err: BaseException, name: str, when: str, kept: str = "") -> EnvError | None:
    """The ``EnvError`` for ``err`` if it was raised in a vector env's ``reset`` or ``step``
    (``None`` otherwise: a bug of ours keeps its traceback)."""
    found = getattr(err, "env_call", None) or env_call(err.__traceback__)
    if found is None:
        return None
    method, index, cls = found
    name = name.removeprefix("custom:")
    if cls is not None and "<" in name:  # a lambda: the env's class says more
        name = f"{cls} (made by {name.rsplit('.', 1)[-1]})"
    which = "" if index is None else f" of env index {index}"
    tail = f"; {kept}" if kept else ""
    return EnvError(f"env: {name} raised {_describe(err)} in {method}(){which} {when}{tail}")


def episode_step_limit(env: Any) -> tuple[int, bool]:
    """``(limit, own)``: the env's ``max_episode_steps`` (``own``), else
    :data:`DEFAULT_EPISODE_STEPS`. ``env``: an id, or a vector env from ``make_env``."""
    spec = None
    if isinstance(env, str):
        try:
            spec = gym.spec(env)
        except gym.error.Error:
            spec = None
    else:
        for source in (env, *getattr(env, "envs", ())):
            spec = getattr(source, "spec", None) or spec
            limit = _time_limit(source)
            if limit is not None:
                return limit, True
    limit = getattr(spec, "max_episode_steps", None)
    return (int(limit), True) if limit else (DEFAULT_EPISODE_STEPS, False)


def _time_limit(env: Any) -> int | None:
    """The ``max_episode_steps`` of a ``TimeLimit`` among ``env``'s wrappers."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._max_episode_steps)
        env = env.env
    return None


def probe_env(source: str | Callable[[], gym.Env], name: str) -> Any:
    """One env (a vector env of one), to build the policy from; one that cannot be made is an
    ``EnvError`` naming it (our own errors, an unknown id say, name it already)."""
    try:
        return make_env(source, num_envs=1)
    except (LogtrickError, ValueError, TypeError):
        raise
    except Exception as err:
        name = name.removeprefix("custom:")
        raise EnvError(f"env: making {name} raised {_describe(err)}") from err


def numbers(name: str, obs: Any) -> Any:
    """``obs`` as numpy arrays (dicts and tuples kept); ``TypeError`` naming ``name`` if an
    entry is not numbers (strings, objects)."""
    if isinstance(obs, dict):
        return {k: numbers(f"{name}[{k!r}]", v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(numbers(f"{name}[{i}]", v) for i, v in enumerate(obs))
    array = np.asarray(obs)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name}: expected numbers (an array of the observation space's shape), got an "
            f"array of dtype {array.dtype}"
        )
    return array
