r"""Observation spaces as flat float vectors: Dict, Tuple and discrete leaves, and action masks.

The policies read one float vector per observation. :class:`ObsLayout` maps any supported
observation space onto one, leaf by leaf, in the space's own order (a ``Dict``'s key order):

==================  ====================================  ================  ===============
leaf                features                              normalised        width
==================  ====================================  ================  ===============
``Box``             the values, flattened                 running stats     ``prod(shape)``
``Discrete(n)``     one-hot of ``x - start``              no                ``n``
``MultiDiscrete``   one one-hot per component             no                ``sum(nvec)``
``MultiBinary``     the bits                              no                ``prod(shape)``
``Dict``/``Tuple``  their leaves, concatenated (nested)   per leaf          sum of leaves
==================  ====================================  ================  ===============

A ``Box`` observation space keeps its shape (the policy flattens it); every other one becomes a
vector. A ``Dict`` observation's ``"action_mask"`` key (PettingZoo's convention) is not a feature:
:meth:`ObsLayout.split` returns it as the action mask. ``Text``, ``Graph``, ``Sequence`` and
``OneOf`` leaves have no fixed-size vector: :class:`~logtrick.rl.errors.UnsupportedSpaceError`
names their path.

Action spaces: :func:`head_size` says how many outputs the policy's head has for one, and refuses
the unsupported ones. Action masks are in :mod:`logtrick.rl.masks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from logtrick.rl.errors import UnsupportedSpaceError

__all__ = ["MASK_KEY", "ObsLayout", "head_size"]

MASK_KEY = "action_mask"
"""Name of the action mask in ``info`` (Gymnasium) and in a ``Dict`` observation (PettingZoo)."""


@dataclass(frozen=True)
class _Leaf:
    path: tuple[Any, ...]  # keys / indices from the root to the leaf
    space: spaces.Space
    width: int


def _leaves(space: spaces.Space, path: tuple[Any, ...] = ()) -> list[_Leaf]:
    """The feature leaves of ``space`` in order; ``UnsupportedSpaceError`` naming a bad one."""
    if isinstance(space, spaces.Dict):
        items = [(k, s) for k, s in space.spaces.items() if not (path == () and k == MASK_KEY)]
        return [leaf for k, s in items for leaf in _leaves(s, (*path, k))]
    if isinstance(space, spaces.Tuple):
        return [leaf for i, s in enumerate(space.spaces) for leaf in _leaves(s, (*path, i))]
    if isinstance(space, spaces.Discrete):
        return [_Leaf(path, space, int(space.n))]
    if isinstance(space, spaces.MultiDiscrete):
        return [_Leaf(path, space, int(space.nvec.sum()))]
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return [_Leaf(path, space, math.prod(space.shape))]
    where = "observation_space" + "".join(f"[{p!r}]" for p in path)
    raise UnsupportedSpaceError(
        f"{where}: {space!r} has no fixed-size vector; supported observation spaces are Box, "
        "Discrete, MultiDiscrete, MultiBinary and Dict / Tuple of them (nested)"
    )


def _one_hot(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``batch + (k,)`` indices (component i below ``sizes[i]``) -> ``batch + (sum(sizes),)``."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros((*x.shape[:-1], int(sizes.sum())), dtype=np.float32)
    np.put_along_axis(out, (x + offsets).astype(np.int64), 1.0, -1)
    return out


class ObsLayout:
    """How observations of ``space`` become float32 feature vectors.

    Attributes:
        space: the observation space.
        shape: the features' shape per observation (a ``Box``'s own shape, else ``(dim,)``).
        dim: number of features.
        normalized: bool ``(dim,)``, True for the features of ``Box`` leaves (those that running
            mean/variance normalisation applies to).
        has_mask: the space is a ``Dict`` with an ``"action_mask"`` key.
    """

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        self.leaves = _leaves(space)
        self.dim = sum(leaf.width for leaf in self.leaves)
        self.is_box = isinstance(space, spaces.Box)
        self.shape = tuple(space.shape) if isinstance(space, spaces.Box) else (self.dim,)
        self.has_mask = isinstance(space, spaces.Dict) and MASK_KEY in space.spaces
        self.normalized = np.concatenate(
            [np.full(leaf.width, isinstance(leaf.space, spaces.Box)) for leaf in self.leaves]
        )

    def split(self, obs: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``(features, action_mask or None)`` of one observation or a batch (numpy)."""
        mask = np.asarray(obs[MASK_KEY]) if self.has_mask else None
        return self.flatten(obs), mask

    def flatten(self, obs: Any) -> np.ndarray:
        """Features ``batch + shape`` of ``obs`` (``batch`` may be empty); a ``Box`` observation
        is returned as float32, unchanged in shape."""
        if self.is_box:
            return np.asarray(obs, dtype=np.float32)
        return np.concatenate([self._leaf(leaf, obs) for leaf in self.leaves], -1)

    def _leaf(self, leaf: _Leaf, obs: Any) -> np.ndarray:
        x = obs
        for key in leaf.path:
            x = x[key]
        space = leaf.space
        x = np.asarray(x)
        if isinstance(space, spaces.Discrete):
            return _one_hot((x - space.start)[..., None], np.array([space.n]))
        if isinstance(space, spaces.MultiDiscrete):
            lead = x.shape[: x.ndim - 1]
            return _one_hot((x - space.start).reshape(*lead, -1), space.nvec.reshape(-1))
        assert space.shape is not None  # a Box leaf: every other leaf returned above
        lead = x.shape[: x.ndim - len(space.shape)]
        return x.reshape(*lead, leaf.width).astype(np.float32)


def head_size(space: spaces.Space) -> int:
    """Number of actor outputs for ``space``; ``UnsupportedSpaceError`` (a ``TypeError``) naming it
    when unsupported."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise UnsupportedSpaceError(
                f"action_space: MultiDiscrete needs a 1-D nvec, got {space.nvec.shape}"
            )
        return int(space.nvec.sum())
    if isinstance(space, (spaces.MultiBinary, spaces.Box)):
        return math.prod(space.shape)
    raise UnsupportedSpaceError(
        f"action_space: {space!r} is not supported; expected Discrete, MultiDiscrete, "
        "MultiBinary or Box"
    )
