"""The distribution inside ``Independent`` and its discrete family: what every per-component
estimator (ARM, DisARM, measure-valued, enumeration, the relaxations, REBAR/RELAX) reads first.

``Independent(base, r)`` samples exactly like ``base``; an estimator that works per component of
``base`` (a Bernoulli logit, a Gaussian loc) unwraps it here, once, and treats the reinterpreted
dimensions as batch dimensions that f reduces.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, OneHotCategorical

__all__ = ["DiscreteBase", "discrete_base", "open_uniform", "unwrap_independent"]


DiscreteBase = Bernoulli | Categorical | OneHotCategorical
"""The families the relaxations and ARM read ``logits`` and ``probs`` from."""

KINDS: dict[str, tuple[type, ...]] = {
    "bernoulli": (Bernoulli,),
    "categorical": (Categorical, OneHotCategorical),
}


def unwrap_independent(dist: Distribution) -> tuple[Distribution, int]:
    r"""The distribution inside any nesting of ``Independent``, and how many of its trailing batch
    dimensions the ``Independent`` wrappers reinterpreted as event dimensions in all.

    ``Independent(base, r)`` samples exactly like ``base``; only its shapes differ: batch shape
    ``base.batch_shape[:-r]``, and ``log_prob`` summed over the last r batch dimensions. An
    estimator that works per component of ``base`` (a Bernoulli logit, a Gaussian loc) draws from
    ``base`` and treats the reinterpreted dimensions like batch dimensions that f reduces: f's
    output follows the *outer* batch shape, ``(K,) + dist.batch_shape[:j]``.

    Returns:
        ``(base, r)`` with ``r`` the sum of the ``reinterpreted_batch_ndims`` (0 for a
        distribution that is not an ``Independent``).
    """
    reinterpreted = 0
    while isinstance(dist, Independent):
        reinterpreted += dist.reinterpreted_batch_ndims
        dist = dist.base_dist
    return dist, reinterpreted


def discrete_base(
    dist: Distribution, who: str, kinds: tuple[str, ...] = ("bernoulli", "categorical")
) -> tuple[DiscreteBase, str]:
    """The Bernoulli or categorical distribution inside ``dist`` (unwrapping ``Independent``) and
    its kind, ``"bernoulli"`` or ``"categorical"`` (f takes one-hot vectors); else a ``TypeError``
    naming the estimator ``who`` and the supported families."""
    base, _ = unwrap_independent(dist)
    for kind in kinds:
        if isinstance(base, KINDS[kind]):
            return cast(DiscreteBase, base), kind
    names = [cls.__name__ for kind in kinds for cls in KINDS[kind]]
    wanted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    got = type(dist).__name__ if base is dist else f"{type(dist).__name__}({type(base).__name__})"
    raise TypeError(
        f"dist: {who} needs a {wanted} (optionally inside Independent), got {got}; use "
        f"estimator='score_function' for other distributions"
    )


def open_uniform(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Uniform noise in the open interval (eps, 1 - eps), so that logarithms stay finite."""
    eps = torch.finfo(like.dtype).eps
    return torch.rand(shape, dtype=like.dtype, device=like.device).clamp(eps, 1.0 - eps)
