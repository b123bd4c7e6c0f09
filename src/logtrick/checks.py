"""Generic argument checks: the vocabulary the public functions share at their boundary.

Each check is written once, named for what it checks, and raises a ``TypeError`` (wrong kind) or
``ValueError`` (wrong value or shape) whose message names the argument, what it got and what was
expected. Checks return the (possibly converted) value so that a boundary reads
``x = check_tensor("x", x)``. Hot loops check once per call at the boundary, never per element;
:func:`check_finite` costs one reduction when the input is clean. A check about one concept
(a distribution's support, a baseline an estimator ignores, an env id) lives beside that concept.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = [
    "MAX_SEED",
    "check_bool",
    "check_bool_tensor",
    "check_broadcasts_to",
    "check_choice",
    "check_distribution",
    "check_finite",
    "check_finite_number",
    "check_floating",
    "check_in_range",
    "check_instance",
    "check_int_tuple",
    "check_integer_tensor",
    "check_ndim",
    "check_nonempty_str",
    "check_nonnegative",
    "check_nonnegative_int",
    "check_param_list",
    "check_positive",
    "check_positive_int",
    "check_same_shape",
    "check_seed",
    "check_shape",
    "check_shape_in",
    "check_tensor",
    "transformed",
]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def transformed(x: Tensor) -> bool:
    """Whether ``x`` lives under ``torch.vmap``/``torch.func.grad`` (or a batched backward):
    its values cannot be read (no ``.item()``), so data-dependent checks are skipped there."""
    functorch = torch._C._functorch
    return bool(
        functorch.is_functorch_wrapped_tensor(x)
        or functorch.is_batchedtensor(x)
        or functorch.is_legacy_batchedtensor(x)
    )


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
    finite by construction and cost nothing; under ``torch.vmap`` the values are not readable and
    the check is skipped.
    """
    if not (x.is_floating_point() or x.is_complex()):
        return x
    d = x.detach() if x.requires_grad else x
    if mask is None and not d.is_complex():
        try:
            if math.isfinite(d.sum().item()):
                return x
        except RuntimeError:  # under vmap or torch.func the values cannot be read
            if transformed(x):
                return x
            raise
    elif transformed(x):
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
