r"""Grouped advantages for ``k`` samples per context (prompt, input, start state).

Draw ``k`` samples :math:`y_{c,1..k} \sim \pi(\cdot \mid x_c)` for each context :math:`c` and
score them, ``rewards[c, i]``. The score-function gradient of the expected reward is estimated by

.. math::  \hat g = \frac{1}{C} \sum_c \frac{1}{k} \sum_i A_{c,i}\,
           \nabla_\theta \log \pi(y_{c,i} \mid x_c),

and the functions here compute the advantages :math:`A_{c,i}` from the rewards, by name in
:func:`grouped_advantages`: REINFORCE (:math:`r`), RLOO (leave-one-out mean), Dr. GRPO (group
mean), GRPO (group mean and standard deviation), REINFORCE++ (batch mean and standard
deviation), centred ranks, a given baseline, and a moving average of earlier calls. :math:`\hat g`
is unbiased whenever :math:`A_{c,i} = r_{c,i} - b_{c,i}` with :math:`b_{c,i}` independent of
:math:`y_{c,i}`; a mean that includes :math:`r_{c,i}` shrinks it by :math:`(k-1)/k` (direction
kept), while dividing by a group's standard deviation or using ranks changes the objective.

Data-parallel training: the groups are the rows a rank holds (per-rank groups; keep the
``k`` samples of one context on one rank), and the batch statistics of ``"reinforce_plus_plus"``
and the moving average are the rank's own; nothing is communicated (the stateful baselines that
can share their statistics across ranks take ``group=``, see :mod:`logtrick.baselines`).

Every function returns a :class:`GroupedAdvantages`: the ``(contexts, k)`` advantages, detached,
in the rewards' floating dtype (``float32`` for integer or bool rewards), and the number of
*degenerate* groups, whose advantages are all zero because their rewards carry no signal (all
``k`` rewards equal for the group-relative methods; all equal to the baseline for a baseline).
Statistics are accumulated in ``float64`` (``float32`` on MPS) after shifting each group by its
first reward, so large offsets with a small spread neither lose the spread nor produce a negative
variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from logtrick.checks import (
    check_choice,
    check_finite,
    check_in_range,
    check_nonnegative,
    check_shape_in,
    check_tensor,
)

__all__ = [
    "METHODS",
    "GroupedAdvantages",
    "MovingAverageState",
    "baseline_advantages",
    "batch_normalized_advantages",
    "group_mean_advantages",
    "group_normalized_advantages",
    "grouped_advantages",
    "moving_average_advantages",
    "rank_advantages",
    "reinforce_advantages",
    "rloo_advantages",
]

METHODS = (
    "reinforce",
    "rloo",
    "grpo",
    "dr_grpo",
    "reinforce_plus_plus",
    "mean",
    "mean_std",
    "rank",
    "baseline",
)
"""Names accepted by :func:`grouped_advantages`; ``"mean"``, ``"mean_std"`` are ``"dr_grpo"``,
``"grpo"`` by their descriptive names."""
STDS = ("group", "batch", "none")


@dataclass(frozen=True)
class GroupedAdvantages:
    """Advantages of ``k`` samples per context and how many groups give no learning signal."""

    advantages: Tensor
    """``(contexts, k)`` advantages, detached, in the rewards' floating dtype."""
    degenerate_groups: int
    """Number of contexts whose advantages are all zero (no signal: e.g. all rewards equal)."""


@dataclass(frozen=True)
class MovingAverageState:
    """State of :func:`moving_average_advantages`: pass it in, get the next one back."""

    average: Tensor
    """0-d ``float64`` exponential moving average of past mean rewards (not bias-corrected)."""
    steps: int = 0
    """Number of calls folded into ``average``."""


def _out_dtype(rewards: Tensor) -> torch.dtype:
    return rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()


def _as_accumulator(rewards: object, min_k: int, what: str) -> Tensor:
    """Validated ``(contexts, k)`` rewards (``k >= min_k``, real, finite) in the accumulator."""
    rewards = check_grouped_rewards("rewards", rewards, min_k, what)
    return rewards.detach().to(torch.float32 if rewards.device.type == "mps" else torch.float64)


def _deviations(x: Tensor) -> Tensor:
    r"""Two-pass :math:`r_{c,i} - \bar r_c`, each group first shifted by its first reward."""
    shifted = x - x[:, :1]
    return shifted - shifted.mean(1, keepdim=True)


def _batch_deviations(x: Tensor, unbiased: bool) -> tuple[Tensor, Tensor]:
    r""":math:`r - \bar r` over the whole batch and its standard deviation (shifted, two-pass)."""
    shifted = x - x[:1, :1]
    dev = shifted - shifted.mean()
    return dev, (dev.pow(2).sum() / (x.numel() - int(unbiased))).sqrt()


def _n_equal(x: Tensor, to: Tensor | None = None) -> int:
    """Number of rows whose entries are all equal (and equal to ``to`` when given)."""
    same = x.amax(1) == x.amin(1)
    if to is not None:
        same = same & (x[:, 0] == to)
    return int(same.sum())


def reinforce_advantages(rewards: Tensor) -> GroupedAdvantages:
    r"""The rewards themselves, no baseline (REINFORCE): :math:`A_{c,i} = r_{c,i}`.

    Unbiased, and the highest-variance choice: every sample's score is weighted by its raw
    reward, so a constant offset of the reward adds noise without signal. A group is degenerate
    when all of its rewards are 0.

    Args:
        rewards: ``(contexts, k)`` rewards, finite, ``k >= 1``.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Williams (1992), Simple Statistical Gradient-Following Algorithms for Connectionist
        Reinforcement Learning.
    """
    x = _as_accumulator(rewards, 1, "reinforce")
    return GroupedAdvantages(x.to(_out_dtype(rewards)), _n_equal(x, torch.zeros_like(x[:, 0])))


def rloo_advantages(rewards: Tensor) -> GroupedAdvantages:
    r"""Leave-one-out advantages (RLOO): each reward minus the mean of the other ``k - 1``.

    .. math::  A_{c,i} = r_{c,i} - \frac{1}{k-1} \sum_{j \neq i} r_{c,j}
               = \frac{k}{k-1}\,(r_{c,i} - \bar r_c)

    Unbiased: the baseline of sample ``i`` does not depend on sample ``i``. Requires ``k >= 2``.

    Args:
        rewards: ``(contexts, k)`` rewards, finite.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Kool, van Hoof & Welling (2019), Buy 4 REINFORCE Samples, Get a Baseline for Free!
        Ahmadian et al. (2024), Back to Basics: Revisiting REINFORCE Style Optimization for
        Learning from Human Feedback in LLMs.
    """
    x = _as_accumulator(rewards, 2, "rloo")
    k = x.shape[1]
    adv = _deviations(x) * (k / (k - 1))
    return GroupedAdvantages(adv.to(_out_dtype(rewards)), _n_equal(x))


def group_mean_advantages(rewards: Tensor) -> GroupedAdvantages:
    r"""Each reward minus its group's mean, :math:`A_{c,i} = r_{c,i} - \bar r_c`.

    The mean includes :math:`r_{c,i}`, so :math:`\mathbb{E}[\hat g] = \frac{k-1}{k} \nabla J`:
    the direction is unbiased, and ``advantages * k / (k - 1)`` is exactly
    :func:`rloo_advantages`. Equal to ``group_normalized_advantages(rewards, std="none")``.

    Args:
        rewards: ``(contexts, k)`` rewards, finite, ``k >= 2`` (a group of one has advantage 0).

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Liu et al. (2025), Understanding R1-Zero-Like Training: A Critical Perspective (Dr. GRPO).
    """
    x = _as_accumulator(rewards, 2, "mean")  # a group of one: r - mean(r) = 0, no signal
    return GroupedAdvantages(_deviations(x).to(_out_dtype(rewards)), _n_equal(x))


def group_normalized_advantages(
    rewards: Tensor, std: str = "group", eps: float = 1e-6, unbiased: bool = True
) -> GroupedAdvantages:
    r"""Group-mean advantages divided by a standard deviation (GRPO).

    .. math::  A_{c,i} = \frac{r_{c,i} - \bar r_c}{\sigma + \epsilon},\qquad
               \sigma^2 = \frac{1}{n - u} \sum (r - \mu)^2

    with :math:`u = 1` for the sample (``unbiased=True``, as ``torch.std`` in common GRPO code)
    and :math:`u = 0` for the population deviation. ``std="group"``: over the ``k`` rewards of
    each context (:math:`\mu = \bar r_c`, :math:`n = k`; GRPO), which rescales each context's
    gradient (a different objective: very easy and very hard contexts weigh more); ``"batch"``:
    over all rewards (:math:`n = C k`; REINFORCE++-baseline); ``"none"``: no division (Dr. GRPO).
    Two-pass variance (mean, then mean squared deviation) in float64.

    Args:
        rewards: ``(contexts, k)`` rewards, finite; ``k >= 2`` unless ``std="none"``.
        std: ``"group"``, ``"batch"`` or ``"none"``.
        eps: added to :math:`\sigma`; must be ``>= 0``.
        unbiased: sample (``True``) or population (``False``) standard deviation.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Shao et al. (2024), DeepSeekMath (GRPO). Liu et al. (2025), Understanding R1-Zero-Like
        Training (Dr. GRPO). Liu et al. (2025), Tricks or Traps? A Deep Dive into RL for LLM
        Reasoning (group mean with batch standard deviation).
    """
    check_choice("std", std, STDS)
    check_nonnegative("eps", eps)
    x = _as_accumulator(rewards, 2, "the group mean")  # a group of one: r - mean(r) = 0
    dev = _deviations(x)
    if std == "group":
        sigma = (dev.pow(2).sum(1, keepdim=True) / (x.shape[1] - int(unbiased))).sqrt()
        dev = dev / (sigma + eps)
    elif std == "batch":
        dev = dev / (_batch_deviations(x, unbiased)[1] + eps)
    return GroupedAdvantages(dev.to(_out_dtype(rewards)), _n_equal(x))


def batch_normalized_advantages(
    rewards: Tensor, eps: float = 1e-6, unbiased: bool = True
) -> GroupedAdvantages:
    r"""Rewards normalised over the whole batch, not per group (REINFORCE++).

    .. math::  A_{c,i} = \frac{r_{c,i} - \bar r}{\sigma + \epsilon},\qquad
               \bar r = \frac{1}{Ck} \sum_{c,i} r_{c,i},\quad
               \sigma^2 = \frac{1}{Ck - u} \sum_{c,i} (r_{c,i} - \bar r)^2

    One baseline and one scale for the whole batch, so no context is up-weighted for being easy
    or hard. :math:`\bar r` includes each sample's own reward, which shrinks the expected
    gradient by :math:`1 - 1/(Ck)`; :math:`1/\sigma` is a batch-wide step size. A group is
    degenerate when all of its rewards equal the batch mean. With the group mean as baseline:
    ``group_normalized_advantages(rewards, std="batch")`` (REINFORCE++-baseline).

    Args:
        rewards: ``(contexts, k)`` rewards, finite, ``C k >= 2``.
        eps: added to :math:`\sigma`; must be ``>= 0``.
        unbiased: sample (``True``, :math:`u = 1`) or population (:math:`u = 0`) deviation.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Hu (2025), REINFORCE++: A Simple and Efficient Approach for Aligning Large Language
        Models (global advantage normalisation).
    """
    check_nonnegative("eps", eps)
    x = _as_accumulator(rewards, 1, "reinforce_plus_plus")
    if x.numel() < 2:
        raise ValueError(f"rewards: a batch standard deviation needs >= 2 rewards, got {x.numel()}")
    dev, sigma = _batch_deviations(x, unbiased)
    adv = dev / (sigma + eps) if bool(sigma + eps > 0) else dev  # all equal: dev is 0
    return GroupedAdvantages(adv.to(_out_dtype(rewards)), int((adv == 0).all(1).sum()))


def rank_advantages(rewards: Tensor) -> GroupedAdvantages:
    r"""Centred ranks within each group, in :math:`[-\tfrac12, \tfrac12]`, ties averaged.

    .. math::  A_{c,i} = \frac{\operatorname{rank}_c(r_{c,i})}{k - 1} - \frac12,\qquad
               \operatorname{rank}_c(r) = \#\{j : r_{c,j} < r\}
               + \tfrac12 (\#\{j : r_{c,j} = r\} - 1)

    Invariant to any increasing transform of the reward and robust to outliers; it optimises
    the expected rank rather than the expected reward. ``O(k log k)`` per group; ``k >= 2``.

    Args:
        rewards: ``(contexts, k)`` rewards, finite.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Salimans et al. (2017), Evolution Strategies as a Scalable Alternative to Reinforcement
        Learning (centred rank transformation). Wierstra et al. (2014), Natural Evolution
        Strategies (fitness shaping).
    """
    x = _as_accumulator(rewards, 2, "rank")
    srt = x.sort(1).values.contiguous()
    below = torch.searchsorted(srt, x.contiguous(), side="left")
    at_most = torch.searchsorted(srt, x.contiguous(), side="right")
    rank = (below + at_most - 1).to(x.dtype) / 2
    adv = rank / (x.shape[1] - 1) - 0.5
    return GroupedAdvantages(adv.to(_out_dtype(rewards)), _n_equal(x))


def baseline_advantages(rewards: Tensor, baseline: Tensor) -> GroupedAdvantages:
    r"""Rewards minus a given per-context baseline, e.g. the greedy decode's reward.

    .. math::  A_{c,i} = r_{c,i} - b_c

    Unbiased when :math:`b_c` does not depend on the samples :math:`y_{c,\cdot}` (self-critical
    training: :math:`b_c` is the reward of the greedy output for context :math:`c`).

    Args:
        rewards: ``(contexts, k)`` rewards, finite, ``k >= 1``.
        baseline: ``(contexts,)`` or ``(contexts, 1)`` baseline, finite.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages; a group is degenerate when
        all of its rewards equal its baseline.

    References:
        Rennie et al. (2017), Self-critical Sequence Training for Image Captioning.
    """
    x = _as_accumulator(rewards, 1, "baseline")
    c = x.shape[0]
    check_shape_in("baseline", baseline, [(c,), (c, 1)], "one value per context of rewards")
    b = check_finite("baseline", baseline).detach().reshape(c).to(x.dtype)
    adv = x - b[:, None]
    return GroupedAdvantages(adv.to(_out_dtype(rewards)), _n_equal(x, b))


def moving_average_advantages(
    rewards: Tensor, state: MovingAverageState | None = None, decay: float = 0.9
) -> tuple[GroupedAdvantages, MovingAverageState]:
    r"""Rewards minus a bias-corrected moving average of earlier calls' mean rewards.

    .. math::  b_t = \frac{m_{t-1}}{1 - \beta^{t-1}},\qquad
               m_t = \beta\, m_{t-1} + (1 - \beta)\, \bar r_t,\qquad A = r - b_t

    The baseline of call :math:`t` uses calls :math:`1..t-1` only (unbiased); on the first call
    (``state=None`` or ``steps == 0``) it is 0. One scalar average over all contexts, because
    contexts usually change from call to call.

    Args:
        rewards: ``(contexts, k)`` rewards, finite, ``k >= 1``.
        state: the state returned by the previous call, or ``None`` to start.
        decay: :math:`\beta \in [0, 1)`.

    Returns:
        ``(GroupedAdvantages, new_state)``; pass ``new_state`` to the next call.

    References:
        Williams (1992), Simple Statistical Gradient-Following Algorithms for Connectionist
        Reinforcement Learning (reinforcement baseline). Kingma & Ba (2015), Adam (bias
        correction).
    """
    check_in_range("decay", decay, 0.0, 1.0, high_open=True)
    if state is not None and not isinstance(state, MovingAverageState):
        raise TypeError(f"state: expected a MovingAverageState or None, got {type(state)}")
    x = _as_accumulator(rewards, 1, "moving_average")
    if state is None or state.steps == 0:
        avg, steps = torch.zeros((), dtype=x.dtype, device=x.device), 0
        b = avg
    else:
        avg, steps = state.average.to(device=x.device, dtype=x.dtype), state.steps
        b = avg / (1.0 - decay**steps)
    new = MovingAverageState(decay * avg + (1.0 - decay) * x.mean(), steps + 1)
    adv = GroupedAdvantages((x - b).to(_out_dtype(rewards)), _n_equal(x, b.expand(x.shape[0])))
    return adv, new


def grouped_advantages(
    rewards: Tensor,
    method: str = "rloo",
    std: str | None = None,
    baseline: Tensor | None = None,
    eps: float = 1e-6,
    unbiased: bool = True,
) -> GroupedAdvantages:
    r"""Advantages of ``k`` samples per context by ``method``: the one entry point, by name.

    .. math::  \text{reinforce: } r_i \quad
               \text{rloo: } r_i - \tfrac{1}{k-1}\textstyle\sum_{j\ne i} r_j \quad
               \text{dr\_grpo: } r_i - \bar r_c \quad
               \text{grpo: } \frac{r_i - \bar r_c}{\sigma_c + \epsilon} \quad
               \text{reinforce\_plus\_plus: } \frac{r_i - \bar r}{\sigma + \epsilon}

    (:math:`\bar r_c, \sigma_c`: the group's mean and standard deviation; :math:`\bar r,
    \sigma`: the batch's), ``baseline``: :math:`r_i - b_c`, and ``rank``: centred ranks in
    :math:`[-\tfrac12, \tfrac12]`. ``"mean"`` is ``"dr_grpo"`` and ``"mean_std"`` is
    ``"grpo"`` under their descriptive names. Only ``reinforce``, ``rloo`` and ``baseline`` give
    an unbiased gradient as they stand (``dr_grpo`` up to the factor :math:`(k-1)/k`); GRPO's
    :math:`1/\sigma_c` reweighs contexts by difficulty. Details and references: the function
    of each method above; the stateful moving average is :func:`moving_average_advantages`.

    Args:
        rewards: ``(contexts, k)`` rewards, finite.
        method: one of :data:`METHODS`.
        std: for ``"grpo"``/``"mean_std"`` only: ``"group"`` (default), ``"batch"`` (the group
            mean over the batch's deviation: REINFORCE++-baseline) or ``"none"``.
        baseline: for ``"baseline"`` only (required): ``(contexts,)`` or ``(contexts, 1)``.
        eps: for the normalised methods: added to the standard deviation.
        unbiased: for the normalised methods: sample (``True``) or population deviation.

    Returns:
        :class:`GroupedAdvantages` with ``(contexts, k)`` advantages.

    References:
        Williams (1992), REINFORCE. Ahmadian et al. (2024), Back to Basics (RLOO). Shao et al.
        (2024), DeepSeekMath (GRPO). Liu et al. (2025), Understanding R1-Zero-Like Training
        (Dr. GRPO). Hu (2025), REINFORCE++.
    """
    check_choice("method", method, METHODS)
    if std is not None and method not in ("grpo", "mean_std"):
        raise ValueError(
            f"std: only used by method='grpo' or 'mean_std', got {std=} with {method=}"
        )
    if (baseline is None) == (method == "baseline"):
        raise ValueError(
            f"baseline: method='baseline' needs a baseline tensor and other methods take none; "
            f"got {method=} and baseline {'None' if baseline is None else 'given'}"
        )
    if method in ("grpo", "mean_std"):
        return group_normalized_advantages(rewards, std or "group", eps, unbiased)
    if method == "reinforce_plus_plus":
        return batch_normalized_advantages(rewards, eps, unbiased)
    if method == "baseline":
        return baseline_advantages(rewards, baseline)  # type: ignore[arg-type]
    return _PLAIN[method](rewards)


_PLAIN = {"reinforce": reinforce_advantages, "rloo": rloo_advantages, "rank": rank_advantages,
          "dr_grpo": group_mean_advantages, "mean": group_mean_advantages}  # fmt: skip


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
