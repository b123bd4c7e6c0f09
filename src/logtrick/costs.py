"""The one place a black box's costs enter every estimator: ``f(x)`` called, checked, converted.

Every estimator evaluates f through :func:`evaluate_cost`, so a rule about costs is written once:
a bool or integer f (a 0/1 checker) is converted to the parameters' float dtype, a complex one is
refused, an f that writes into its input or reduces the wrong batch dimension is refused, and
the costs are finite.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.distributions.transforms import Transform

from logtrick.checks import check_finite

__all__ = [
    "CostFn",
    "cost_dtype",
    "evaluate_cost",
    "joint_log_prob",
    "require_gradient",
    "tensors_of",
]

CostFn = Callable[[Tensor], Tensor]


def tensors_of(obj: object, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Tensor]]:
    """``(name, tensor)`` for the tensors among the attributes of ``obj``, searching nested
    distributions (``Independent.base_dist``) and transforms (``AffineTransform.loc``)."""
    items = enumerate(obj) if isinstance(obj, (list, tuple)) else vars(obj).items()
    for key, value in items:
        sep = "." if prefix else ""
        name = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}{sep}{key}"
        if isinstance(value, Tensor):
            yield name, value
        elif isinstance(value, (Distribution, Transform, list, tuple)) and depth < 4:
            yield from tensors_of(value, name, depth + 1)


def cost_dtype(dist: Distribution, x: Tensor) -> torch.dtype:
    """The float dtype costs take: the sample's, else the distribution's first float parameter's
    (a ``Categorical`` draws integers), else torch's default."""
    if x.is_floating_point():
        return x.dtype
    for _, t in tensors_of(dist):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _shape_error(out: Tensor, x: Tensor, batch: torch.Size, samples: int) -> ValueError:
    allowed = [(samples, *batch[:j]) for j in range(len(batch), -1, -1)]
    return ValueError(
        f"f: expected f(x) of shape (samples,) + batch_shape = {allowed[0]} (or with trailing "
        f"batch dimensions reduced: {allowed[1:]}) for x of shape {tuple(x.shape)}, got "
        f"{tuple(out.shape)}; reduce over the event dimensions inside f"
    )


def _ambiguous(batch: torch.Size, kept: int) -> bool:
    """Whether dropping some batch dimensions other than the trailing ones also leaves the shape
    ``batch[:kept]`` (then the shape check cannot tell which dimensions f reduced)."""
    target = tuple(batch[:kept])
    for dims in itertools.combinations(range(len(batch)), kept):
        if dims != tuple(range(kept)) and tuple(batch[d] for d in dims) == target:
            return True
    return False


def _check_reduced_trailing(f: CostFn, x: Tensor, out: Tensor, batch: torch.Size) -> None:
    """Where the shape is ambiguous, f's cost at the first kept batch position must depend only on
    that position's components (a differentiable f is probed with one backward; a black box
    cannot be)."""
    kept = out.dim() - 1
    if not (0 < kept < len(batch) and _ambiguous(batch, kept)):
        return
    if not x.is_floating_point() or torch.is_inference_mode_enabled():
        return
    probe = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        c = f(probe)
    if not (isinstance(c, Tensor) and c.requires_grad):
        return
    first = (slice(None),) + (0,) * kept
    (g,) = torch.autograd.grad(c[first].sum(), probe, allow_unused=True)
    if g is None:
        return
    g = g.clone()
    g[first] = 0
    if bool(g.ne(0).any()):
        raise ValueError(
            f"f: its output {tuple(out.shape)} at batch position {(0,) * kept} depends on x at "
            f"other positions of the batch dimensions it keeps: f reduced a batch dimension other "
            f"than the trailing ones (batch_shape {tuple(batch)}); reduce only the trailing ones "
            f"(e.g. .sum(-1)), keeping batch_shape[:{kept}] = {tuple(batch[:kept])} in place"
        )


def evaluate_cost(f: CostFn, x: Tensor, dist: Distribution, samples: int) -> Tensor:
    """``f(x)`` checked and converted: real, of shape ``(K,) + batch_shape[:j]`` for some ``j``,
    finite, floating point (bool and integer costs in :func:`cost_dtype`).

    f may reduce trailing batch dimensions (e.g. ``.sum(-1)`` over independent Bernoulli
    components): those components then form one joint sample and their log-probabilities are
    summed (see :func:`joint_log_prob`). f must not modify x in place (the version counter
    tells).
    """
    version = None if x.is_inference() else x._version  # inference tensors keep no counter
    out = f(x)
    if version is not None and x._version != version:
        raise ValueError(
            "f: modified its input x in place (e.g. x.add_(1)); the estimator reuses x for the "
            "log-probability and the gradient, so it would be wrong: compute on a copy "
            "(x + 1, or x.clone())"
        )
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out, dtype=cost_dtype(dist, x))
    if out.is_complex():
        raise TypeError(
            f"f: returned complex values (dtype {out.dtype}); expected real costs: return "
            f"f(x).real or f(x).abs() explicitly"
        )
    batch = dist.batch_shape
    if not out.shape or out.shape[0] != samples or out.shape[1:] != batch[: out.dim() - 1]:
        raise _shape_error(out, x, batch, samples)
    if not out.is_floating_point():  # a 0/1 checker: bools and ints are costs too
        out = out.to(cost_dtype(dist, x))
    check_finite("f(x)", out)
    _check_reduced_trailing(f, x, out, batch)
    return out


def require_gradient(cost: Tensor, x: Tensor, who: str) -> Tensor:
    """``cost`` when it carries a gradient from ``x``; an estimator that differentiates f through
    its input (``who``: pathwise, the relaxations, REBAR, the delta method) would otherwise get
    an exact zero from a black-box f, silently."""
    if x.requires_grad and not cost.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"f: {who} differentiates f(x) through x, but f(x) carries no gradient (f detaches x, "
            f"thresholds it, or leaves torch: numpy, .item(), round); use "
            f"estimator='score_function' (or 'arm', 'disarm', 'relax' for Bernoulli) for a "
            f"black-box f"
        )
    return cost


def joint_log_prob(dist: Distribution, x: Tensor, cost: Tensor) -> Tensor:
    """``dist.log_prob(x)`` summed over the trailing batch dimensions that ``cost`` reduced.

    ``x`` was drawn from ``dist`` itself, so it lies in the support: the distribution's sample
    validation (a support check and a host sync per call, again in each base distribution of an
    ``Independent`` or a transform) is skipped as redundant.
    """
    chain = [dist]  # Independent and transforms validate again inside: their base too
    while isinstance(getattr(chain[-1], "base_dist", None), Distribution):
        chain.append(chain[-1].base_dist)  # type: ignore[attr-defined]
    validate = [d._validate_args for d in chain]
    for d in chain:
        d._validate_args = False
    try:
        log_prob = dist.log_prob(x)
    finally:
        for d, v in zip(chain, validate):
            d._validate_args = v
    extra = log_prob.dim() - cost.dim()
    return log_prob.sum(tuple(range(-extra, 0))) if extra else log_prob
