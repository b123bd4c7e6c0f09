r"""Action masks: which actions of a ``Discrete`` or ``MultiDiscrete`` space may be taken.

A mask comes from the env, as ``info["action_mask"]`` (Gymnasium's convention, e.g. Taxi-v3) or
as the ``"action_mask"`` key of a ``Dict`` observation (PettingZoo's; see
:class:`~logtrick.rl.spaces.ObsLayout`); with both, an action must be allowed by both. It is a
bool array ``batch + (head_size,)``, aligned with the policy's logits:

=================  ============================================================================
action space       mask
=================  ============================================================================
``Discrete(n)``    ``n`` entries, True = allowed
``MultiDiscrete``  ``sum(nvec)`` entries: the per-component masks concatenated (a tuple of
                   per-component masks, Gymnasium's ``MultiDiscrete.sample`` form, is
                   concatenated)
=================  ============================================================================

The policy masks its logits (:func:`mask_logits`: :math:`-\infty` where not allowed), so that
sampling, the mode, log-probabilities and entropy are those of the renormalised distribution

.. math::  \pi_m(a \mid s) = \frac{m_a\, e^{z_a}}{\sum_b m_b\, e^{z_b}},

and the gradient with respect to a masked logit is exactly 0. The collector stores each step's
mask in the rollout, so an update recomputes log-probabilities under the mask the action was
sampled with (the PPO ratio compares like with like). Every row must allow at least one action
(one per component): :func:`check_action_mask` says which env and step did not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from logtrick.rl.errors import UnsupportedSpaceError
from logtrick.rl.spaces import MASK_KEY

__all__ = ["check_action_mask", "combine_masks", "info_action_mask", "mask_logits", "sections"]


def sections(action_space: spaces.Space) -> list[int]:
    """Sizes of the mask's components: ``[n]`` for ``Discrete(n)``, ``nvec`` for a 1-D
    ``MultiDiscrete``; ``UnsupportedSpaceError`` for any other action space."""
    if isinstance(action_space, spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        return [int(n) for n in action_space.nvec]
    raise UnsupportedSpaceError(
        f"action_space: the env gives an action mask but its action space is {action_space!r}; "
        "masks are supported for Discrete and 1-D MultiDiscrete action spaces"
    )


def mask_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    r"""``logits`` with :math:`-\infty` where ``mask`` is False (a new tensor; no-op for None).

    Args:
        logits: ``batch + (head_size,)``.
        mask: bool, broadcastable to ``logits``; every row must allow an action (not checked
            here: the collector and :meth:`~logtrick.rl.policies.ActorCritic.act` check).
    """
    if mask is None:
        return logits
    return logits.masked_fill(~mask, -torch.inf)


def combine_masks(*masks: np.ndarray | None) -> np.ndarray | None:
    """The actions every given mask allows (None when none is given)."""
    given = [np.asarray(m, dtype=bool) for m in masks if m is not None]
    if not given:
        return None
    return given[0] if len(given) == 1 else np.logical_and.reduce(given)


def info_action_mask(info: dict[str, Any]) -> np.ndarray | None:
    """The batched ``info["action_mask"]`` of a vector env as bool ``(B, head_size)``, or None.

    Rows whose env gave no mask (``info["_action_mask"]`` False) allow every action. A tuple of
    per-component masks (``MultiDiscrete``) is concatenated.
    """
    if MASK_KEY not in info:
        return None
    mask = info[MASK_KEY]
    if isinstance(mask, tuple):
        mask = np.concatenate([np.asarray(m) for m in mask], -1)
    mask = np.asarray(mask)
    if mask.dtype == object:  # envs whose masks were not batched into one array
        mask = np.stack([np.concatenate(m, -1) if isinstance(m, tuple) else m for m in mask])
    mask = mask.astype(bool)
    flags = info.get("_" + MASK_KEY)
    if flags is not None and not np.all(flags):
        mask[~np.asarray(flags, dtype=bool)] = True
    return mask


def check_action_mask(mask: np.ndarray, sizes: list[int], where: str) -> None:
    """``ValueError`` unless ``mask`` (``batch + (sum(sizes),)``) allows an action in every row
    and every component (``sizes``: :func:`sections` of the action space)."""
    head_size = sum(sizes)
    if mask.shape[-1:] != (head_size,):
        raise ValueError(
            f"action_mask {where}: expected shape batch + ({head_size},) (Discrete: n entries, "
            f"MultiDiscrete: sum(nvec)), got {mask.shape}"
        )
    offsets = np.cumsum([0, *sizes[:-1]])
    allowed = np.logical_or.reduceat(mask, offsets, axis=-1).all(-1)
    if not np.all(allowed):
        bad = np.flatnonzero(~np.reshape(allowed, -1)).tolist()
        raise ValueError(
            f"action_mask {where}: env(s) {bad} allow no action (in some component); an env "
            "must allow at least one action at every step"
        )
