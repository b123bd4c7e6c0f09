r"""What an update changes, and its one check: the learner (policy, optimizer, minibatch generator,
reward scale), its optimizer step, and the finiteness check that ends each update.

:meth:`Learner.step` records each loss and gradient norm and :meth:`Learner.watch` the inputs
worth checking (advantages, value targets, the critic's values), all as tensors: no host sync
during the update. Steps taken with ``record_gradient=True`` also add their policy gradient to
the running sums of :func:`gradient_snr`. :meth:`Learner.finish` checks them and the parameters,
together with turning the logged values into floats, in one host sync, and raises
:class:`~logtrick.rl.errors.DivergenceError` naming the first non-finite one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from logtrick.collective import pooled_moments
from logtrick.rl.config import Config
from logtrick.rl.errors import DivergenceError
from logtrick.rl.policies import ActorCritic, merge_moments

__all__ = ["Adam", "Batch", "Learner", "RewardScale", "clip_grad_norm", "gradient_snr"]

Batch = dict[str, Tensor]
"""Flat ``(N, ...)`` tensors of N transitions, by name (obs, actions, log_probs, returns, ...)."""


@dataclass
class RewardScale:
    r"""Divide rewards by a running standard deviation of the discounted return.

    .. math::  R_t = \gamma R_{t-1} (1 - d_{t-1}) + r_t,\qquad
               \tilde r_t = r_t / \sqrt{\mathrm{Var}[R]}

    (the scaling of Engstrom et al. 2020, "Implementation Matters in Deep RL", as in SB3's
    ``VecNormalize``). The critic then learns scaled values; advantages are unchanged in sign.
    Invalid transitions (NEXT_STEP's reset rows, the dropped tails of whole-episode rollouts)
    belong to no episode and leave :math:`R` alone. Under torchrun the moments of :math:`R` are
    pooled over the ranks: every rank scales by the same variance, the one checkpointed.
    """

    gamma: float
    running: Tensor | None = None
    """(B,) discounted return of the current episodes (``None``: new episodes)."""
    count: float = 1e-4
    mean: float = 0.0
    var: float = 1.0

    def __call__(self, rewards: Tensor, done: Tensor, valid: Tensor) -> Tensor:
        if self.running is None or len(self.running) != rewards.shape[1]:  # fewer workers
            self.running = torch.zeros(rewards.shape[1], dtype=torch.float64, device=rewards.device)
        seen = torch.empty_like(rewards, dtype=torch.float64)
        for t in range(rewards.shape[0]):
            running = torch.where(valid[t], self.running * self.gamma + rewards[t], self.running)
            seen[t] = running
            self.running = torch.where(done[t], 0.0, running)
        n, m, v = pooled_moments(seen[valid])  # of every rank's envs under torchrun
        self.count, self.mean, self.var = merge_moments(self.count, self.mean, self.var, n,
                                                        float(m), float(v))  # fmt: skip
        return (rewards / (self.var**0.5 + 1e-8)).to(rewards.dtype)

    def new_episodes(self) -> None:
        """The environments were reset: the running returns start again from zero."""
        self.running = None

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running, "count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running, self.count = state["running"], state["count"]
        self.mean, self.var = state["mean"], state["var"]


@dataclass
class Learner:
    """What an update changes: the policy, its optimizer, the minibatch RNG, the reward scale.

    :meth:`step` records each loss and gradient norm, :meth:`watch` an input, for the one
    finiteness check of :meth:`finish`.
    """

    config: Config
    policy: ActorCritic
    optimizer: torch.optim.Optimizer | Adam
    generator: torch.Generator
    reward_scale: RewardScale | None = None
    reduce: Callable[[list[Tensor], float], list[Tensor]] | None = field(default=None, repr=False)
    """Data parallelism (:func:`~logtrick.rl.distributed.mean_over_ranks`): ``(tensors, n)`` ->
    their means over the ranks, weighted by each rank's ``n``; applied to the gradients after
    each backward (before clipping) and to what the ranks' updates must agree on."""
    params: list[Tensor] = field(init=False, repr=False)
    _watched: list[tuple[str, Tensor]] = field(default_factory=list, init=False, repr=False)
    _losses: list[Tensor] = field(default_factory=list, init=False, repr=False)
    _norms: list[Tensor] = field(default_factory=list, init=False, repr=False)
    _grads: list[Tensor] = field(default_factory=list, init=False, repr=False)
    """Running ``[Σ g_i, Σ ‖g_i‖², K]`` of the recorded policy gradients (empty: none)."""
    _recorded: int = field(default=0, init=False, repr=False)
    """How many gradients the sums hold (``grad_snr`` is logged from two on)."""

    def __post_init__(self) -> None:
        self.params = list(self.policy.parameters())
        actor = getattr(self.policy, "actor_parameters", self.policy.parameters)
        self.actor_params = list(actor())

    def step(self, loss: Tensor, record_gradient: bool = False, weight: float = 1.0) -> Tensor:
        """One optimizer step on ``loss`` with gradient-norm clipping; returns the norm.
        ``record_gradient``: add the (unclipped) gradient of the actor's parameters to the sums
        of :func:`gradient_snr` (on the device: no host sync). ``weight``: the transitions
        ``loss`` averages over (the ranks' gradients are averaged with these weights)."""
        for p in self.params:  # Optimizer.zero_grad costs ~10x this loop (profiler hooks)
            p.grad = None
        loss.backward()
        if self.reduce is not None:
            grads = [p.grad for p in self.params if p.grad is not None]
            torch._foreach_copy_(grads, self.reduce(grads, weight))
        if record_gradient:
            self._record_gradient()
        norm = clip_grad_norm([p.grad for p in self.params if p.grad is not None],
                              self.config.max_grad_norm)  # fmt: skip
        self.optimizer.step()
        # A fused optimizer writes in place without bumping version counters; the policy's
        # cached inference weights are keyed on them.
        increment_version(self.params)
        self._losses.append(loss.detach())
        self._norms.append(norm)
        return norm

    def _record_gradient(self) -> None:
        g = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                       for p in self.actor_params])  # fmt: skip
        self._recorded += 1
        if not self._grads:
            self._grads = [g.clone(), g.square().sum(), torch.ones(())]
        else:
            self._grads[0].add_(g)
            self._grads[1].add_(g.square().sum())
            self._grads[2].add_(1.0)

    def begin(self) -> None:
        """Start an update: forget what the previous one recorded."""
        self._watched, self._losses, self._norms, self._grads = [], [], [], []
        self._recorded = 0

    def watch(self, name: str, x: Tensor) -> None:
        """Check ``x`` for NaN and inf in :meth:`finish` (no host sync now)."""
        self._watched.append((name, x.detach().abs().amax()))

    def minibatches(self, batch: Batch) -> list[Batch]:
        """A fresh random split of ``batch`` into ``num_minibatches`` parts whose sizes differ
        by at most one (one gather per tensor; the parts are views)."""
        n = len(next(iter(batch.values())))
        k = min(self.config.num_minibatches, n)
        if k <= 1:  # one minibatch: the whole batch, order irrelevant
            return [batch]
        perm = torch.randperm(n, generator=self.generator)
        parts = [batch[key][perm].tensor_split(k) for key in batch]
        return [dict(zip(batch, p)) for p in zip(*parts)]

    def finish(self, info: dict[str, Tensor | float]) -> dict[str, float]:
        """The logged values as floats and the finiteness check, in one host sync.

        Raises:
            DivergenceError: naming the first non-finite quantity: an input (in the order
                watched), the loss or the gradient norm of an optimizer step, the parameters.
        """
        checked = [x for _, x in self._watched] + self._losses + self._norms
        with torch.no_grad():
            checked.append(torch.stack(torch._foreach_norm(self.params, math.inf)).amax())
        if self._recorded >= 2:  # the spread needs two gradients: no column, never a NaN
            info = {**info, "grad_snr": gradient_snr(*self._grads)}
        names = [k for k, v in info.items() if isinstance(v, Tensor)]
        values = torch.stack([*checked, *(cast(Tensor, info[k]).float() for k in names)]).tolist()
        found = [i for i, v in enumerate(values[: len(checked)]) if not math.isfinite(v)]
        if found:
            raise DivergenceError(self._diagnose(found[0], values[found[0]]))
        self.begin()
        out = {k: float(v) for k, v in info.items() if not isinstance(v, Tensor)}
        return {**out, **dict(zip(names, values[len(checked) :]))}

    def _diagnose(self, i: int, value: float) -> str:
        """What the ``i``-th checked quantity is, and what to try."""
        watched, steps = len(self._watched), len(self._losses)
        if i < watched:
            what = f"the {self._watched[i][0]} (computed from the critic and the rewards)"
        elif i < watched + 2 * steps:
            kind = "loss" if i < watched + steps else "gradient norm"
            what = f"the {kind} of optimizer step {(i - watched) % max(steps, 1) + 1} of {steps}"
        else:
            what = "the parameters after the update"
        self.begin()
        config, lr = self.config, self.optimizer.param_groups[0]["lr"]
        return (
            f"{what} is {value}; lower lr (now {lr:.3g}) or max_grad_norm (now "
            f"{config.max_grad_norm:g}), or normalise observations and rewards "
            f"(normalize_obs / normalize_rewards)"
        )


class Adam:
    """``torch.optim.Adam(params, lr, eps=eps, fused=True)``: the same two kernels, state and
    ``state_dict`` (checkpoints load into either), without what ``torch.optim`` adds around them:
    its first construction imports ``torch._dynamo`` (1-3 s of start-up, a third of a short
    run's) and every ``step`` pays ~0.5 ms of Python (profiler hooks, grouping, state checks),
    as much as a small network's own minibatch step.
    """

    def __init__(self, params: Iterable[Tensor], lr: float, eps: float = 1e-8,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:  # fmt: skip
        self.param_groups: list[dict[str, Any]] = [
            {"lr": float(lr), "betas": betas, "eps": eps, "weight_decay": 0, "amsgrad": False,
             "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
             "fused": True, "decoupled_weight_decay": False, "params": list(params)}
        ]  # fmt: skip
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p not in self.state:  # torch's initial state of a fused Adam
                zero = torch.zeros((), dtype=torch.float32, device=p.device)
                self.state[p] = {"step": zero, "exp_avg": torch.zeros_like(p),
                                 "exp_avg_sq": torch.zeros_like(p)}  # fmt: skip
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            params, [p.grad for p in params], [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"],
            beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
            maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam``'s format: state by parameter index, the group's settings."""
        params = self.param_groups[0]["params"]
        state = {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": state, "param_groups": [{**group, "params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        (group,) = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(group["params"]) != len(params):
            raise ValueError(f"optimizer state: {len(group['params'])} parameters, "
                             f"the policy has {len(params)}")  # fmt: skip
        settings = {k: v for k, v in group.items() if k != "params"}
        self.param_groups[0].update(settings, betas=tuple(settings["betas"]))
        self.state = {}
        for i, p in zip(group["params"], params):
            if i in state_dict["state"]:
                s = state_dict["state"][i]
                step = s["step"].to(p.device, torch.float32).clone()
                moments = {k: s[k].to(p.device, p.dtype).clone() for k in ("exp_avg", "exp_avg_sq")}
                self.state[p] = {"step": step, **moments}


def clip_grad_norm(grads: list[Tensor], max_norm: float) -> Tensor:
    r"""Scale ``grads`` in place to global norm at most ``max_norm``; returns the norm before.

    .. math::  g \leftarrow g \cdot \min\big(1, \tfrac{c}{\|g\|_2 + 10^{-6}}\big)

    ``torch.nn.utils.clip_grad_norm_`` with the same result, in two ``_foreach`` kernels (that
    function takes the per-tensor Python loop on CPU).

    Args:
        grads: gradient tensors (any shapes).
        max_norm: :math:`c > 0`; ``inf`` only measures.

    Returns:
        The 0-dim global 2-norm before clipping.
    """
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if math.isfinite(max_norm):
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
    return total


def gradient_snr(total: Tensor, total_sq: Tensor, count: Tensor) -> Tensor:
    r"""Signal-to-noise ratio of K minibatch gradients, from their running sums.

    .. math::  \bar g = \frac1K \sum_{i=1}^K g_i,\qquad
               \mathrm{SNR} = \frac{\|\bar g\|_2}
               {\sqrt{\frac1K \sum_{i=1}^K \|g_i - \bar g\|_2^2}}
               = \frac{\|\bar g\|_2}{\sqrt{\frac1K \sum_i \|g_i\|_2^2 - \|\bar g\|_2^2}}

    :math:`g_i` is the gradient of minibatch :math:`i`'s loss with respect to the actor's
    parameters, flattened and unclipped; the trainer records the minibatches of the first epoch
    of a ``ppo`` update (disjoint parts of one rollout, all taken near the rollout's policy, so
    each is an estimate of the same policy gradient). Above 1, the mean gradient stands out of
    the minibatch noise; well below 1, a step follows the noise of the estimator more than the
    gradient, whatever the learning rate (Kingma & Ba 2015, §2.1, call this ratio the SNR).
    The unweighted mean: minibatch sizes differ by at most one.

    Args:
        total: ``(P,)`` :math:`\sum_i g_i`.
        total_sq: 0-dim :math:`\sum_i \|g_i\|^2`.
        count: 0-dim :math:`K`.

    Returns:
        0-dim SNR; NaN when :math:`K < 2` (no spread to measure), inf when the gradients agree.

    References:
        Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015.
    """
    mean_sq = (total / count).square().sum()
    spread = (total_sq / count - mean_sq).clamp(min=0.0)
    snr = mean_sq.sqrt() / spread.sqrt()
    return torch.where(count >= 2, snr, torch.full_like(snr, math.nan))
