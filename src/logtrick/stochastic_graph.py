r"""Several stochastic nodes: each score multiplies only the costs downstream of it.

A model that samples in stages, :math:`x_1 \sim p_1(\cdot;\theta)`,
:math:`x_2 \sim p_2(\cdot \mid x_1;\theta)`, ..., and pays costs :math:`c_j` that each depend on
some of the samples, has the gradient

.. math::  \nabla_\theta\, \mathbb{E}\Big[\sum_j c_j\Big]
           = \mathbb{E}\Big[\sum_j \Big(\nabla_\theta c_j
           + c_j \sum_{i \in D_j} \nabla_\theta \log p_i(x_i)\Big)\Big],

where :math:`D_j` is the set of stochastic nodes that cost :math:`c_j` is downstream of. Leaving
out the scores of the nodes a cost does not depend on (a cost does not care about a sample drawn
after it) is Rao-Blackwellisation: the dropped products have mean zero and only add variance.
:func:`dice_surrogate` builds the one tensor whose value is :math:`\sum_j c_j` and whose
derivatives of every order are these estimators, with the magic box of the union of each cost's
upstream nodes,

.. math::  L = \sum_j c_j\,\boxdot\Big(\sum_{i \in D_j} \log p_i\Big)
           + \sum_i \big(1 - \boxdot(\log p_i)\big)\, b_i ,

and a baseline :math:`b_i` per node, which must not depend on :math:`x_i` (it may depend on the
samples upstream of it). The dependencies are stated explicitly, one list per cost, by index or by
name; nothing is registered globally.

References:
    Schulman, Heess, Weber & Abbeel (2015), Gradient Estimation Using Stochastic Computation
    Graphs. Foerster, Farquhar, Al-Shedivat, Rocktäschel, Xing & Whiteson (2018), DiCE: The
    Infinitely Differentiable Monte Carlo Estimator.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from logtrick.baselines import resolve_baseline, score_terms
from logtrick.checks import check_broadcasts_to, check_finite, check_nonnegative_int
from logtrick.dice import magic_box

__all__ = ["chain_dependencies", "dice_surrogate"]

Tensors = Sequence[Tensor] | Mapping[Hashable, Tensor]
Dependencies = Sequence[Iterable[Hashable]] | Mapping[Hashable, Iterable[Hashable]]


def chain_dependencies(num_costs: int) -> list[list[int]]:
    """Dependencies of a chain: cost ``t`` is downstream of nodes ``0, ..., t``.

    The structure of a sequence sampled step by step with one cost (or reward) per step, as in
    reinforcement learning: ``[[0], [0, 1], [0, 1, 2], ...]``.

    Args:
        num_costs: the number of steps (one node and one cost per step).

    Returns:
        ``depends_on`` for :func:`dice_surrogate`.
    """
    check_nonnegative_int("num_costs", num_costs)
    return [list(range(t + 1)) for t in range(num_costs)]


_ENTRY = {"costs": "cost", "depends_on": "cost", "log_probs": "node", "baselines": "node"}


def _as_dict(name: str, items: object) -> dict[Hashable, object]:
    """A sequence (keys 0, 1, ...) or a mapping (its own keys) as a dict."""
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, (list, tuple)):
        return dict(enumerate(items))
    raise TypeError(
        f"{name}: expected a list or a dict (one entry per {_ENTRY[name]}), got "
        f"{type(items).__name__}; wrap a single one in a list: [x]"
    )


def _tensors(name: str, items: object) -> dict[Hashable, Tensor]:
    out = _as_dict(name, items)
    for key, value in out.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}[{key!r}]: expected a Tensor, got {type(value).__name__}")
        check_finite(f"{name}[{key!r}]", value)
    return out  # type: ignore[return-value]


def _dependencies(
    depends_on: object, costs: Mapping[Hashable, Tensor], nodes: Mapping[Hashable, Tensor]
) -> dict[Hashable, list[Hashable]]:
    """``depends_on`` checked: one list of known, distinct nodes for every cost and no other."""
    deps = _as_dict("depends_on", depends_on)
    missing, extra = set(costs) - set(deps), set(deps) - set(costs)
    if missing or extra:
        raise ValueError(
            f"depends_on: expected one entry per cost (keys {sorted(map(repr, costs))}); missing "
            f"{sorted(map(repr, missing))}, unknown {sorted(map(repr, extra))}. A cost downstream "
            f"of no stochastic node gets an empty list"
        )
    out = {}
    for key, upstream in deps.items():
        if isinstance(upstream, (str, bytes, Tensor)) or not isinstance(upstream, Iterable):
            raise TypeError(
                f"depends_on[{key!r}]: expected a list of node keys, got {upstream!r}; write "
                f"[{upstream!r}] for one node"
            )
        upstream = list(upstream)
        unknown = [i for i in upstream if i not in nodes]
        if unknown:
            raise ValueError(
                f"depends_on[{key!r}]: unknown nodes {unknown}; the nodes are the keys of "
                f"log_probs: {list(nodes)}"
            )
        if len(set(upstream)) != len(upstream):
            raise ValueError(f"depends_on[{key!r}]: a node is listed twice in {upstream}")
        out[key] = upstream
    return out


def _common_shape(costs: Mapping[Hashable, Tensor], nodes: Mapping[Hashable, Tensor]) -> torch.Size:
    """The costs' one shape; every log-probability broadcasts to it without enlarging it."""
    shapes = {tuple(c.shape) for c in costs.values()}
    if len(shapes) > 1:
        raise ValueError(
            f"costs: expected one shape for all costs, e.g. (K,) or (K, B), got "
            f"{ {k: tuple(c.shape) for k, c in costs.items()} }"
        )
    shape = torch.Size(shapes.pop() if shapes else ())
    for key, lp in nodes.items():  # one log-probability per sample, size 1 where it is shared
        check_broadcasts_to(f"log_probs[{key!r}]", lp, shape, "the costs' shape")
    return shape


def _baseline_terms(
    baselines: object,
    costs: Mapping[Hashable, Tensor],
    nodes: Mapping[Hashable, Tensor],
    deps: Mapping[Hashable, list[Hashable]],
    sample_dim: int,
    context: Tensor | None,
) -> list[Tensor]:
    r"""The terms :math:`(1 - \boxdot(\log p_i))\, b_i`, value 0, one per node with a baseline;
    :math:`b_i` is computed from the sum of the costs downstream of node i (detached)."""
    specs = _as_dict("baselines", baselines)
    unknown = [i for i in specs if i not in nodes]
    if unknown:
        raise ValueError(f"baselines: unknown nodes {unknown}; the nodes are {list(nodes)}")
    out = []
    for node, spec in specs.items():
        baseline = resolve_baseline(spec)
        downstream = [costs[j].detach() for j, up in deps.items() if node in up]
        if not downstream:
            continue  # no cost downstream: the node's score multiplies nothing
        total = torch.stack(downstream).sum(0)
        part = score_terms(
            total,
            nodes[node],
            baseline,
            sample_dim,
            context,
            with_cost=False,
            name=f"baselines[{node!r}]",
        )
        if part is not None:
            out.append(part)
    return out


def dice_surrogate(
    costs: Tensors,
    log_probs: Tensors,
    depends_on: Dependencies,
    baselines: Sequence[object] | Mapping[Hashable, object] | None = None,
    sample_dim: int = 0,
    context: Tensor | None = None,
) -> Tensor:
    r"""Surrogate of a stochastic computation graph: value :math:`\sum_j c_j`, derivatives of
    every order the Rao-Blackwellised score-function estimators.

    .. math::  L = \sum_j c_j\,\boxdot\Big(\sum_{i \in D_j} \log p_i\Big)
               + \sum_i \big(1 - \boxdot(\log p_i)\big)\, b_i,\qquad
               \nabla L = \sum_j \Big(\nabla c_j + c_j \sum_{i\in D_j} \nabla \log p_i\Big)
               - \sum_i b_i \nabla\log p_i

    Requires: each ``log_probs[i]`` differentiable in the parameters and evaluated at a sample
    drawn without gradient (``sample()``); ``depends_on[j]`` lists *every* node whose sample
    influences cost j, directly or through later samples (leaving one out biases the estimate;
    listing extra nodes only adds variance). Costs may carry their own gradients. Unbiased for
    first and higher derivatives of :math:`\mathbb{E}[\sum_j c_j]` (DiCE); a baseline
    :math:`b_i` must not depend on :math:`x_i`: a leave-one-out baseline on a node whose one
    sample all K costs share (log-probability of size 1 along ``sample_dim``) is refused, naming
    the node. Baselines reduce the variance of the first derivative only.

    Args:
        costs: a list or a dict of cost tensors, all of one shape, e.g. ``(K,)`` or ``(K, B)``
            (K samples along ``sample_dim``).
        log_probs: a list or a dict, one entry per stochastic node: the log-probability of its
            sample, summed over event dimensions, of a shape that broadcasts to the costs' shape
            (size-1 dimensions where one sample is shared).
        depends_on: for every cost (by index into ``costs`` or by its key), the list of nodes
            (indices into ``log_probs`` or keys) upstream of it; ``[]`` for none. A list of lists
            or a dict, e.g. ``{"c2": ["x1", "x2"]}``; :func:`chain_dependencies` for chains.
        baselines: optional, a list or dict of baselines per node (any spec that
            :func:`logtrick.surrogates` accepts: a number, a tensor, ``"leave_one_out"``,
            ``"moving_average"``, an ``lt.MovingAverage()`` kept across steps, ``lt.Learned``).
            A baseline object is called with the sum of the costs downstream of its node.
        sample_dim: the dimension that indexes the samples (for leave-one-out and moving
            averages).
        context: input of ``Learned`` baselines.

    Returns:
        A tensor of the costs' shape whose value is exactly their sum; reduce it (``.mean()``)
        and call ``backward()`` (or ``torch.autograd.grad(..., create_graph=True)`` for higher
        derivatives).

    Example:
        >>> import torch, logtrick as lt
        >>> from torch.distributions import Bernoulli
        >>> theta = torch.zeros(2, requires_grad=True)
        >>> p1 = Bernoulli(logits=theta[0].expand(16))
        >>> x1 = p1.sample()
        >>> p2 = Bernoulli(logits=theta[1] + x1)         # x2 depends on x1
        >>> x2 = p2.sample()
        >>> loss = lt.dice_surrogate(
        ...     costs={"c1": 3.0 * x1, "c2": (x1 - x2) ** 2},
        ...     log_probs={"x1": p1.log_prob(x1), "x2": p2.log_prob(x2)},
        ...     depends_on={"c1": ["x1"], "c2": ["x1", "x2"]},
        ...     baselines={"x1": "leave_one_out", "x2": "leave_one_out"},
        ... ).mean()
        >>> loss.backward()   # theta.grad: x2's score never multiplies c1

    References:
        Schulman et al. (2015), Gradient Estimation Using Stochastic Computation Graphs,
        theorem 1 and section 4. Foerster et al. (2018), DiCE, sections 3-4 (the magic box of
        the union of upstream nodes; the baseline term).
    """
    costs_ = _tensors("costs", costs)
    nodes = _tensors("log_probs", log_probs)
    deps = _dependencies(depends_on, costs_, nodes)
    shape = _common_shape(costs_, nodes)
    if len(shape) and not -len(shape) <= sample_dim < len(shape):
        raise ValueError(f"sample_dim: {sample_dim} is out of range for costs of shape {shape}")
    dtype = next(iter(nodes.values())).dtype if nodes else torch.get_default_dtype()
    terms = []
    for key, cost in costs_.items():
        if not cost.is_floating_point():  # integer or bool costs: keep the gradient's dtype
            cost = cost.to(dtype)
        upstream = [nodes[i] for i in deps[key]]
        terms.append(cost * magic_box(sum(upstream[1:], upstream[0])) if upstream else cost)
    if baselines is not None:
        terms += _baseline_terms(baselines, costs_, nodes, deps, sample_dim, context)
    if not terms:
        raise ValueError("costs: expected at least one cost")
    total = terms[0]
    for term in terms[1:]:  # in order: the value is bit-for-bit c_0 + c_1 + ... (+ exact zeros)
        total = total + term
    return total
