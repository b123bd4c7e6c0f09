"""Argument checks: the one home of every validation the public functions do at their boundary.

Each check is written once, named for what it checks, and raises a ``TypeError`` (wrong kind) or
``ValueError`` (wrong value or shape) whose message names the argument, what it got and what was
expected. Checks return the (possibly converted) value so that a boundary reads
``x = check_tensor("x", x)``. Hot loops check once per call at the boundary, never per element;
:func:`check_finite` costs one reduction when the input is clean.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.distributions import Distribution

if TYPE_CHECKING:
    import numpy

__all__ = [
    "MAX_SEED",
    "check_aligned",
    "check_baseline_used",
    "check_bool",
    "check_bool_tensor",
    "check_broadcasts_to",
    "check_choice",
    "check_distribution",
    "check_env_id",
    "check_env_output",
    "check_finite",
    "check_finite_number",
    "check_fixed_support",
    "check_floating",
    "check_grouped_rewards",
    "check_in_range",
    "check_in_support",
    "check_instance",
    "check_int_tuple",
    "check_integer_tensor",
    "check_json",
    "check_log_prob_differentiable",
    "check_ndim",
    "check_nonempty_str",
    "check_nonnegative",
    "check_nonnegative_int",
    "check_not_a_directory",
    "check_not_a_file",
    "check_param_list",
    "check_path",
    "check_path_name",
    "check_positive",
    "check_positive_int",
    "check_same_shape",
    "check_sample_dim",
    "check_seed",
    "check_shape",
    "check_shape_in",
    "check_tensor",
]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_tensor(name: str, x: object) -> Tensor:
    """``x`` is a ``torch.Tensor``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    return x


def check_floating(name: str, x: object) -> Tensor:
    """``x`` is a floating-point tensor (integer tensors cannot carry gradients)."""
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype}; convert it, "
            f"e.g. {name}.float()"
        )
    return x


def check_shape(name: str, x: object, shape: Sequence[int], what: str = "") -> Tensor:
    """``x`` is a tensor of exactly ``shape`` (``what`` says what the dimensions are)."""
    x = check_tensor(name, x)
    if tuple(x.shape) != tuple(shape):
        hint = f" {what}" if what else ""
        raise ValueError(f"{name}: expected shape {tuple(shape)}{hint}, got {tuple(x.shape)}")
    return x


def check_same_shape(name: str, x: object, ref_name: str, ref: Tensor, what: str = "") -> Tensor:
    """``x`` is a tensor of the shape of ``ref`` (``what``: e.g. "one entry per time step")."""
    x = check_tensor(name, x)
    if x.shape != ref.shape:
        hint = f" ({what})" if what else ""
        raise ValueError(
            f"{name}: expected the shape of {ref_name} {tuple(ref.shape)}{hint}, "
            f"got {tuple(x.shape)}"
        )
    return x


def check_bool_tensor(name: str, x: object, shape: Sequence[int] | None = None) -> Tensor:
    """``x`` is a bool tensor (a flag or a mask), of ``shape`` when given."""
    if not isinstance(x, Tensor) or x.dtype != torch.bool:
        got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name}: expected a bool tensor (True = set), got {got}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def check_finite(name: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """No entry of ``x`` (where ``mask`` is True, if given) is NaN or inf.

    Fast path: NaN and inf propagate through a sum, so one reduction clears the common case; only
    a non-finite sum (a bad entry, or an overflow of finite ones) pays for the exact scan, which
    reports how many entries are bad and where the first one is. Integer and bool tensors are
    finite by construction and cost nothing.
    """
    if not (x.is_floating_point() or x.is_complex()):
        return x
    d = x.detach() if x.requires_grad else x
    if mask is None and not d.is_complex() and math.isfinite(d.sum().item()):
        return x
    bad = ~d.isfinite()
    if mask is not None:
        bad &= mask
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} of {d.numel()} entries are NaN or inf "
            f"(first at index {idx}, shape {tuple(d.shape)}); expected finite values"
        )
    return x


def check_fixed_support(name: str, dist: Distribution) -> Distribution:
    """The support of ``dist`` does not move with its parameters, as far as torch's support
    constraint shows (``Uniform(low, high)``, ``Pareto``'s ``scale``: bounds that require grad).

    The score-function identity differentiates under the integral over a fixed support; where a
    bound depends on θ it misses the boundary term and is biased (for ``Uniform(θ, θ + 2)`` and
    f = x² its gradient is 0 on every sample, the truth is 2θ + 2). Cheap: two attribute reads
    for the usual distributions, whose support is a constant constraint.
    """
    constraint: object = dist.support
    while hasattr(constraint, "base_constraint"):  # independent(...)
        constraint = constraint.base_constraint
    moving = [
        bound
        for bound in ("lower_bound", "upper_bound")
        if isinstance(getattr(constraint, bound, None), Tensor)
        and getattr(constraint, bound).requires_grad
    ]
    if moving:
        verb = "requires" if len(moving) == 1 else "require"
        raise ValueError(
            f"{name}: the support of {type(dist).__name__} depends on its parameters (its "
            f"{' and '.join(moving)} {verb} grad), so the score-function estimator would miss "
            f"the boundary term and be biased; use estimator='pathwise' if it has rsample and f is "
            f"differentiable, or make the bounds constants"
        )
    return dist


def check_positive_int(name: str, value: object, what: str = "") -> int:
    """``value`` is an ``int`` > 0 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        hint = f" ({what})" if what else ""
        raise ValueError(f"{name}: expected a positive int{hint}, got {value!r}")
    return value


def check_nonnegative_int(name: str, value: object, what: str = "") -> int:
    """``value`` is an ``int`` >= 0 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        hint = f" ({what})" if what else ""
        raise ValueError(f"{name}: expected a non-negative int{hint}, got {value!r}")
    return value


MAX_SEED = 2**63 - 1
"""The largest seed: torch's generators take 64-bit seeds, and runs derive others from it
(``seed + 1``, ``seed + 10_000 + episode``, ...)."""


def check_seed(name: str, value: object) -> int:
    """``value`` is an ``int`` in ``[0, MAX_SEED]`` (a seed the generators accept)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"{name}: expected an int in [0, 2**63 - 1] (the generators' seed range), got {value!r}"
        )
    return value


def check_positive(name: str, value: object, allow_inf: bool = False) -> float:
    """``value`` is a real number > 0 and finite (or ``inf`` where ``allow_inf``)."""
    ok = _is_number(value) and value > 0 and (allow_inf or math.isfinite(value))  # type: ignore[operator,arg-type]
    if not ok:
        extra = " (or inf)" if allow_inf else ""
        raise ValueError(f"{name}: expected a positive finite number{extra}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_nonnegative(name: str, value: object) -> float:
    """``value`` is a finite real number >= 0."""
    if not (_is_number(value) and math.isfinite(value) and value >= 0):  # type: ignore[arg-type,operator]
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_in_range(
    name: str,
    value: object,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` is a real number in the interval from ``low`` to ``high`` (open ends as given)."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if not _is_number(value) or math.isnan(value):  # type: ignore[arg-type]
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if below or above:
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    return v


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def check_param_list(
    name: str, params: object, requires_grad: bool = False, nonempty: bool = False
) -> list[Tensor]:
    """``params`` is a list (any iterable but a single tensor) of floating-point tensors.

    Args:
        name: the argument's name, e.g. ``"params"``.
        params: what the user passed.
        requires_grad: every tensor must require grad.
        nonempty: at least one tensor.
    """
    if isinstance(params, Tensor):
        raise TypeError(
            f"{name}: expected a list of tensors, got a single Tensor; wrap it: [theta]"
        )
    if not isinstance(params, Iterable):
        raise TypeError(f"{name}: expected a list of tensors, got {type(params).__name__}")
    out = list(params)
    for i, p in enumerate(out):
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}[{i}]: expected a Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(
                f"{name}[{i}]: expected a floating-point tensor, got dtype {p.dtype} "
                f"(integer tensors cannot carry gradients)"
            )
        if requires_grad and not p.requires_grad:
            raise ValueError(f"{name}[{i}]: expected requires_grad=True (shape {tuple(p.shape)})")
    if nonempty and not out:
        raise ValueError(f"{name}: expected at least one tensor, got an empty list")
    return out


def check_broadcasts_to(name: str, x: Tensor, shape: Sequence[int], what: str = "") -> Tensor:
    """``x`` broadcasts to ``shape`` without enlarging it (size-1 or missing leading dimensions).

    Args:
        name: the argument's name, e.g. ``"baseline"``.
        x: the tensor (its values are not read).
        shape: the shape it must fit into, e.g. the cost's.
        what: what ``shape`` is, for the message (e.g. ``"the cost's shape"``).
    """
    shape = tuple(shape)
    if x.shape == shape or x.dim() == 0:
        return x
    try:
        ok = torch.broadcast_shapes(x.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        target = what or "shape"
        raise ValueError(
            f"{name}: shape {tuple(x.shape)} does not broadcast to {target} {shape} without "
            f"enlarging it; expected {shape}, a shape with size-1 entries in its place, or fewer "
            f"leading dimensions"
        )
    return x


def check_distribution(name: str, dist: object) -> Distribution:
    """``dist`` is a ``torch.distributions.Distribution`` (never a wrapper or a tensor)."""
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"{name}: expected a torch.distributions.Distribution, got {type(dist).__name__}"
        )
    return dist


def check_sample_dim(name: str, x: object, minimum: int, what: str = "samples") -> Tensor:
    """``x`` is a tensor with at least ``minimum`` entries along its first (sample) dimension."""
    x = check_tensor(name, x)
    if x.dim() == 0 or x.shape[0] < minimum:
        raise ValueError(
            f"{name}: expected shape (K, ...) with K >= {minimum} {what} along dim 0, got "
            f"{tuple(x.shape)}"
        )
    return x


def check_in_support(name: str, x: Tensor, dist: Distribution) -> Tensor:
    """Every value of ``x`` lies in ``dist``'s support (skipped where the user turned
    torch.distributions validation off, or the distribution declares no support)."""
    if not dist._validate_args:
        return x
    try:
        support = dist.support
        if support is None:
            return x
        inside = support.check(x)
    except NotImplementedError:
        return x
    if not bool(inside.all()):
        raise ValueError(
            f"{name}: {int((~inside).sum())} of {inside.numel()} values lie outside the support "
            f"{dist.support} of {type(dist).__name__}; expected samples of the distribution"
        )
    return x


def check_log_prob_differentiable(
    dist_fn: Callable[[list[Tensor]], Distribution], params: list[Tensor], x: Tensor
) -> None:
    """Every tensor of ``params`` reaches ``dist_fn(params).log_prob(x)`` through autograd (else
    its score is undefined, and ``torch.func.grad`` would silently return zeros)."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    with torch.enable_grad():
        dist = dist_fn(ps)
        log_prob = dist.log_prob(x).sum()
        try:
            grads = torch.autograd.grad(log_prob, ps, allow_unused=True)
        except RuntimeError as err:  # no graph at all, or an op without a derivative
            raise ValueError(
                f"dist_fn: {type(dist).__name__}.log_prob cannot be differentiated in params "
                f"({err}); every parameter must enter log_prob through differentiable operations"
            ) from err
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            raise ValueError(
                f"params[{i}] (shape {tuple(p.shape)}): {type(dist).__name__}.log_prob does not "
                f"depend on it differentiably (no autograd path: a .detach(), .item() or integer "
                f"cast in dist_fn?), so its score is undefined; drop it from params"
            )


# ------------------------------------------------------------- plain values (configs), envs


def check_bool(name: str, value: object) -> bool:
    """``value`` is a ``bool`` (``0``, ``1``, strings and tensors are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def check_finite_number(name: str, value: object) -> float:
    """``value`` is a finite real number (``bool`` is refused)."""
    if not (_is_number(value) and math.isfinite(value)):  # type: ignore[arg-type]
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_instance(name: str, value: object, cls: type | tuple[type, ...], what: str) -> object:
    """``value`` is an instance of ``cls`` (``what`` names it for the message, e.g. "a dict")."""
    if not isinstance(value, cls):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    return value


def check_nonempty_str(name: str, value: object) -> str:
    """``value`` is a non-empty string."""
    check_instance(name, value, str, "a string")
    if not value:
        raise ValueError(f"{name}: expected a non-empty string, got ''")
    return value  # type: ignore[return-value]


def check_int_tuple(name: str, value: object, what: str = "") -> tuple[int, ...]:
    """``value`` is a tuple (or list) of positive ints; returned as a tuple (may be empty)."""
    hint = f" ({what})" if what else ""
    ok = isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
    if not ok:
        raise ValueError(f"{name}: expected a tuple of positive ints{hint}, got {value!r}")
    return tuple(value)  # type: ignore[arg-type]


def check_path_name(name: str, value: object) -> str:
    """``value`` can name one entry of a directory: non-empty, no path separator, not . or .."""
    check_nonempty_str(name, value)
    if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:  # type: ignore[operator]
        raise ValueError(
            f"{name}: expected a file or directory name (no '/', not '.' or '..'), got {value!r}"
        )
    return value  # type: ignore[return-value]


def check_path(name: str, value: object) -> str:
    """``value`` is a non-empty str or an ``os.PathLike``; returns it as a str."""
    return check_nonempty_str(name, os.fspath(value) if isinstance(value, os.PathLike) else value)


def check_not_a_directory(name: str, value: object) -> str:
    """``value`` (a str or ``os.PathLike``) names a file to write, not an existing directory."""
    path = check_path(name, value)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a directory; expected a file path (e.g. agent.pt)")
    return path


def check_not_a_file(name: str, value: object) -> str:
    """``value`` (a str or ``os.PathLike``) names a directory, or nothing yet (it is created
    later): not a file."""
    path = check_path(name, value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a file; expected a directory (or a new path)")
    return path


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


def check_env_output(
    obs: object,
    reward: object,
    where: str | Callable[[int], str],
    env_index: Sequence[int] | numpy.ndarray | None = None,
) -> None:
    """A vector env's observations and rewards are finite (numpy arrays).

    ``reward`` is ``(B,)`` (one vector step) or ``(T, B)`` (T steps, time-major), ``obs`` the
    same leading shape and then the observation's. Fast path: NaN and inf propagate through a
    sum of squares, so one dot product per array clears the common case. Otherwise the error
    names what is bad (observation or reward), where (``where``, or ``where(t)`` for the step
    ``t`` of the first bad entry, called only on failure, e.g. "at rollout step 3 (global step
    48)") and the env's index (``b``, or ``env_index[b]`` when given).
    """
    import numpy as np

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


def check_aligned(
    ref_name: str, ref: object, mask: object = None, what: str = "", **others: object
) -> tuple[Tensor, Tensor | None]:
    """Tensors that go together entry by entry (e.g. per time step and env).

    ``ref`` is a tensor; ``mask`` is ``None`` or a bool tensor of its shape; each of ``others``
    (``None`` skipped) is a tensor of its shape, finite where ``mask`` is True. ``what`` says
    what an entry is, for the messages. Returns ``(ref, mask)``.
    """
    ref = check_tensor(ref_name, ref)
    if mask is not None:
        mask = check_same_shape("mask", check_bool_tensor("mask", mask), ref_name, ref, what)
    for name, x in others.items():
        if x is not None:
            check_finite(name, check_same_shape(name, x, ref_name, ref, what), mask)
    return ref, mask


def check_json(name: str, value: object) -> object:
    """``value`` can be written as JSON (dicts with string keys, lists, numbers, strings, ...)."""
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected values JSON can hold, got {value!r} ({err})") from None
    return value


def check_shape_in(name: str, x: object, shapes: Iterable[Sequence[int]], what: str = "") -> Tensor:
    """``x`` is a tensor whose shape is one of ``shapes`` (e.g. ``(B,)`` or ``(B, L)``)."""
    x = check_tensor(name, x)
    allowed = [tuple(s) for s in shapes]
    if tuple(x.shape) not in allowed:
        hint = f" ({what})" if what else ""
        want = " or ".join(str(s) for s in allowed)
        raise ValueError(f"{name}: expected shape {want}{hint}, got {tuple(x.shape)}")
    return x


def check_ndim(name: str, x: object, ndim: int, layout: str) -> Tensor:
    """``x`` is a tensor with ``ndim`` dimensions (``layout`` names them, e.g. "(B, L)")."""
    x = check_tensor(name, x)
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected shape {layout}, got {tuple(x.shape)}")
    return x


def check_grouped_rewards(name: str, rewards: object, min_k: int, what: str) -> Tensor:
    """``rewards`` is a real ``(contexts, k)`` tensor, ``k >= min_k``, finite (``what`` needs k).

    Integer and bool rewards are accepted (a 0/1 checker); complex ones are refused.
    """
    rewards = check_tensor(name, rewards)
    if rewards.is_complex():
        raise TypeError(f"{name}: expected real values, got dtype {rewards.dtype}")
    if rewards.dim() != 2:
        raise ValueError(
            f"{name}: expected shape (contexts, k) with k samples per context, got shape "
            f"{tuple(rewards.shape)}; reshape flat rewards with {name}.view(contexts, k)"
        )
    if rewards.shape[1] < min_k:
        raise ValueError(
            f"{name}: {what} needs k >= {min_k} samples per context, got shape "
            f"{tuple(rewards.shape)}"
        )
    return check_finite(name, rewards)


def check_integer_tensor(name: str, x: object) -> Tensor:
    """``x`` is a tensor of integers (token ids, indices): not floating, bool or complex."""
    x = check_tensor(name, x)
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name}: expected an integer tensor (ids), got dtype {x.dtype}")
    return x


def check_known_name(
    name: str, known: Sequence[str], what: str, error: type[Exception] = ValueError
) -> str:
    """``name`` if it is one of ``known``; else ``error`` saying it is an unknown ``what``, with
    the close matches and every known name (a misspelt keyword or ``--set`` field)."""
    if name in known:
        return name
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise error(f"{name}: unknown {what}{hint} (fields: {', '.join(known)})")


def check_baseline_used(estimator: object, baseline: object) -> None:
    """An active baseline given to an estimator without a score term (``takes_baseline`` false:
    pathwise, ARM, DisARM, the relaxations, measure-valued, delta method) would be ignored:
    refuse it rather than let the user believe it reduces the variance."""
    if getattr(estimator, "takes_baseline", True) or not getattr(baseline, "active", False):
        return
    name = getattr(estimator, "name", type(estimator).__name__)
    raise ValueError(
        f"baseline: the {name} estimator has no score term, so the baseline {baseline!r} "
        f"would be ignored; pass baseline=None, or estimator='score_function' (or 'rebar', "
        f"'relax' for discrete samples) to use it"
    )
