r"""Policy-gradient losses and the natural gradient.

Every loss returns ``(loss, info)``: ``loss`` is the scalar to differentiate (to *minimise*),
``info`` a dict of detached 0-dim tensors for logging (no host sync inside the update loop).
All inputs are time-major ``(T, B)`` tensors (any shape works as long as the arguments agree);
``mask`` is a bool tensor of the same shape whose ``False`` entries (e.g. the reset transition of
NEXT_STEP autoreset) are left out of every mean and may hold any value.

The policy gradient (Williams 1992; Sutton et al. 2000) that all of them estimate is

.. math::  \nabla_\theta J(\theta)
           = \mathbb{E}_\tau\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t|s_t)\, \hat A_t\Big].

The natural gradient (Kakade 2001) preconditions it with the inverse Fisher information of the
policy, computed without a matrix from Fisher-vector products and conjugate gradient (Schulman et
al. 2015, TRPO).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "conjugate_gradient",
    "entropy_bonus",
    "explained_variance",
    "fisher_vector_product",
    "masked_mean",
    "natural_gradient",
    "normalize_advantages",
    "ppo_clip_loss",
    "reinforce_loss",
    "value_loss",
]


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
    return x


def _check_like(name: str, x: object, ref_name: str, ref: Tensor) -> Tensor:
    x = _check_tensor(name, x)
    if x.shape != ref.shape:
        raise ValueError(
            f"{name}: expected the shape of {ref_name} {tuple(ref.shape)} "
            f"(one entry per time step and env), got {tuple(x.shape)}"
        )
    return x


def _check_mask(mask: Tensor | None, ref_name: str, ref: Tensor) -> Tensor | None:
    if mask is None:
        return None
    mask = _check_like("mask", mask, ref_name, ref)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor (True = valid), got dtype {mask.dtype}")
    return mask


def _check_finite(name: str, x: Tensor, mask: Tensor | None) -> None:
    bad = ~x.detach().isfinite()
    if mask is not None:
        bad &= mask
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} of {x.numel()} entries are NaN or inf "
            f"(first at index {idx}, shape {tuple(x.shape)}); expected finite values"
        )


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a positive float, got {value!r}")
    return float(value)


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean of ``x`` over the entries where ``mask`` is True.

    .. math::  \bar x = \frac{\sum_i m_i x_i}{\max(1, \sum_i m_i)}

    Masked-out entries may hold NaN (they are selected away, not multiplied by zero). With no
    valid entry the result is 0 (and its gradient zero), so such a minibatch changes nothing.

    Args:
        x: ``(T, B)`` values (any shape).
        mask: ``(T, B)`` bool, or ``None`` for the plain mean.

    Returns:
        A 0-dim tensor.
    """
    x = _check_tensor("x", x)
    mask = _check_mask(mask, "x", x)
    if mask is None:
        return x.mean()
    total = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / mask.sum().clamp_min(1).to(x.dtype)


def reinforce_loss(
    log_probs: Tensor, advantages: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The REINFORCE / vanilla policy-gradient loss :math:`-\overline{\log\pi \cdot \hat A}`.

    .. math::  L(\theta) = -\frac{1}{N}\sum_{(t,b)\ \mathrm{valid}}
               \log \pi_\theta(a_t|s_t)\, \hat A_t,
               \qquad -\nabla_\theta L \approx \nabla_\theta J(\theta)
               = \mathbb{E}\Big[\sum_t \nabla_\theta \log\pi_\theta(a_t|s_t)\, \hat A_t\Big]

    (up to the constant factor of the mean). Requires: ``log_probs`` differentiable in the policy
    parameters, computed at the actions that were *sampled* (not reparameterised); ``advantages``
    are treated as constants (detached) and must not depend on the action they weight except
    through the return (reward-to-go, GAE, or the return minus a state baseline).

    Args:
        log_probs: ``(T, B)`` :math:`\log \pi_\theta(a_t|s_t)`.
        advantages: ``(T, B)`` :math:`\hat A_t`, finite.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        ``(loss, info)`` with ``info = {"policy_loss"}``.

    References:
        Williams (1992), Simple statistical gradient-following algorithms for connectionist
        reinforcement learning. Sutton et al. (2000), Policy gradient methods for reinforcement
        learning with function approximation.
    """
    log_probs = _check_tensor("log_probs", log_probs)
    advantages = _check_like("advantages", advantages, "log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    _check_finite("advantages", advantages, mask)
    loss = -masked_mean(log_probs * advantages.detach(), mask)
    return loss, {"policy_loss": loss.detach()}


def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The PPO clipped surrogate loss.

    .. math::  r_t = \frac{\pi_\theta(a_t|s_t)}{\pi_{\mathrm{old}}(a_t|s_t)},\qquad
               L(\theta) = -\overline{\min\big(r_t \hat A_t,\
               \mathrm{clip}(r_t, 1-\epsilon, 1+\epsilon)\, \hat A_t\big)}

    At :math:`\theta = \theta_{\mathrm{old}}` its gradient is the policy gradient; the clip
    removes the incentive to move :math:`r_t` outside :math:`[1-\epsilon, 1+\epsilon]`. Requires
    actions sampled from :math:`\pi_{\mathrm{old}}`; ``old_log_probs`` and ``advantages`` are
    detached. Logged: ``approx_kl``, the k3 estimator of
    :math:`\mathrm{KL}(\pi_{\mathrm{old}}\,\|\,\pi_\theta)`, unbiased and never negative,

    .. math::  \widehat{\mathrm{KL}} = \overline{(r_t - 1) - \log r_t},

    ``clip_fraction`` (share of entries with :math:`|r_t - 1| > \epsilon`) and ``ratio_mean``.

    Args:
        log_probs: ``(T, B)`` :math:`\log\pi_\theta(a_t|s_t)` under the current parameters.
        old_log_probs: ``(T, B)`` the log-probabilities at collection time.
        advantages: ``(T, B)`` :math:`\hat A_t`, finite.
        clip_eps: :math:`\epsilon > 0`, e.g. 0.2.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        ``(loss, info)`` with ``info = {"policy_loss", "approx_kl", "clip_fraction",
        "ratio_mean"}``.

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms. Schulman (2020),
        Approximating KL divergence (blog post; the k3 estimator).
    """
    log_probs = _check_tensor("log_probs", log_probs)
    old_log_probs = _check_like("old_log_probs", old_log_probs, "log_probs", log_probs)
    advantages = _check_like("advantages", advantages, "log_probs", log_probs)
    mask = _check_mask(mask, "log_probs", log_probs)
    eps = _check_positive("clip_eps", clip_eps)
    _check_finite("advantages", advantages, mask)
    adv = advantages.detach()
    log_ratio = log_probs - old_log_probs.detach()
    ratio = log_ratio.exp()
    surr = torch.min(ratio * adv, ratio.clamp(1.0 - eps, 1.0 + eps) * adv)
    loss = -masked_mean(surr, mask)
    with torch.no_grad():
        info = {
            "policy_loss": loss.detach(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "clip_fraction": masked_mean(((ratio - 1.0).abs() > eps).to(ratio.dtype), mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, info


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_eps: float | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Squared-error loss of the critic, optionally with PPO-style value clipping.

    .. math::  L = \tfrac12\,\overline{(V_\theta(s_t) - G_t)^2}
               \quad\text{or, clipped,}\quad
               L = \tfrac12\,\overline{\max\big((V_\theta - G_t)^2,\
               (V_{\mathrm{old}} + \mathrm{clip}(V_\theta - V_{\mathrm{old}}, -\epsilon,
               \epsilon) - G_t)^2\big)}

    Clipping (as in the PPO reference implementations) needs ``old_values``, the critic's values
    at collection time; ``old_values`` with ``clip_eps=None`` is ignored.

    Args:
        values: ``(T, B)`` :math:`V_\theta(s_t)` under the current parameters.
        returns: ``(T, B)`` regression targets :math:`G_t` (detached), finite.
        old_values: ``(T, B)`` values at collection time, or ``None``.
        clip_eps: :math:`\epsilon > 0` in the units of the values, or ``None`` for no clipping.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        ``(loss, info)`` with ``info = {"value_loss"}`` and, when clipping,
        ``"value_clip_fraction"`` (share of entries with :math:`|V_\theta - V_{\mathrm{old}}| >
        \epsilon`).

    References:
        Schulman et al. (2017), Proximal Policy Optimization Algorithms; Engstrom et al. (2020),
        Implementation Matters in Deep Policy Gradients (on value clipping).
    """
    values = _check_tensor("values", values)
    returns = _check_like("returns", returns, "values", values)
    mask = _check_mask(mask, "values", values)
    _check_finite("returns", returns, mask)
    target = returns.detach()
    sq = (values - target).pow(2)
    info: dict[str, Tensor] = {}
    if clip_eps is not None:
        eps = _check_positive("clip_eps", clip_eps)
        if old_values is None:
            raise ValueError("old_values: clipping (clip_eps given) needs old_values, got None")
        old = _check_like("old_values", old_values, "values", values).detach()
        clipped = old + (values - old).clamp(-eps, eps)
        sq = torch.max(sq, (clipped - target).pow(2))
        with torch.no_grad():
            far = ((values - old).abs() > eps).to(values.dtype)
            info["value_clip_fraction"] = masked_mean(far, mask)
    loss = 0.5 * masked_mean(sq, mask)
    info["value_loss"] = loss.detach()
    return loss, info


def entropy_bonus(entropy: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean policy entropy :math:`\overline{H[\pi_\theta(\cdot|s_t)]}` over valid entries.

    Subtract ``coef * entropy_bonus(...)`` from the loss to encourage exploration.

    Args:
        entropy: ``(T, B)`` per-state entropies (differentiable).
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        A 0-dim tensor (to be maximised).
    """
    return masked_mean(_check_tensor("entropy", entropy), mask)


def normalize_advantages(adv: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    r"""Standardise advantages over the valid entries: :math:`(\hat A - \mu) / (\sigma + \epsilon)`.

    Mean and (Bessel-corrected) standard deviation are taken over valid entries; masked-out
    entries are set to 0. Subtracting the batch mean is a baseline shared by the whole batch, so
    the result is slightly biased for small batches; it is the standard practice of PPO code.

    Args:
        adv: ``(T, B)`` advantages, finite where valid.
        mask: ``(T, B)`` bool, ``False`` entries excluded.
        eps: added to the standard deviation.

    Returns:
        ``(T, B)`` normalised advantages.
    """
    adv = _check_tensor("adv", adv)
    mask = _check_mask(mask, "adv", adv)
    _check_finite("adv", adv, mask)
    valid = torch.ones_like(adv, dtype=torch.bool) if mask is None else mask
    zero = torch.zeros((), dtype=adv.dtype, device=adv.device)
    n = valid.sum().to(adv.dtype)
    mean = torch.where(valid, adv, zero).sum() / n.clamp_min(1)
    var = torch.where(valid, (adv - mean).pow(2), zero).sum() / (n - 1).clamp_min(1)
    return torch.where(valid, (adv - mean) / (var.sqrt() + eps), zero)


def explained_variance(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Share of the target's variance explained by the prediction (logging only).

    .. math::  \mathrm{EV} = 1 - \frac{\operatorname{Var}[G - V]}{\operatorname{Var}[G]}

    1 is perfect, 0 is no better than a constant, negative is worse. NaN when the target is
    constant.

    Args:
        pred: ``(T, B)`` predicted values.
        target: ``(T, B)`` returns.
        mask: ``(T, B)`` bool, ``False`` entries excluded.

    Returns:
        A detached 0-dim tensor.
    """
    pred = _check_tensor("pred", pred).detach()
    target = _check_like("target", target, "pred", pred).detach()
    mask = _check_mask(mask, "pred", pred)
    if mask is not None:
        pred, target = pred[mask], target[mask]
    var_target = target.var(correction=0)
    ev = 1.0 - (target - pred).var(correction=0) / var_target
    return torch.where(var_target > 0, ev, torch.full_like(ev, float("nan")))


# --------------------------------------------------------------------------------------------
# Natural gradient
# --------------------------------------------------------------------------------------------


def _flat(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    return torch.cat(
        [(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(tensors, like)]
    )


def _set_flat(params: Sequence[Tensor], vec: Tensor) -> None:
    """Copy ``vec`` into ``params`` in place (storage kept, so optimisers and modules see it)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(vec[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def _check_param_list(params: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise TypeError("params: expected a list of tensors, got a single Tensor; wrap it: [theta]")
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}]: expected a Tensor, got {type(p).__name__}")
        if not p.requires_grad:
            raise ValueError(f"params[{i}]: expected requires_grad=True (shape {tuple(p.shape)})")
    if not params:
        raise ValueError("params: expected at least one tensor, got an empty list")
    return params


def fisher_vector_product(
    kl_fn: Callable[[], Tensor], params: Sequence[Tensor], damping: float = 0.1
) -> Callable[[Tensor], Tensor]:
    r"""The map :math:`v \mapsto (F + \lambda I)\,v`, with no matrix formed.

    .. math::  F(\theta_0) = \nabla^2_\theta\, \overline{\mathrm{KL}}\big(\pi_{\theta_0}\,\|\,
               \pi_\theta\big)\Big|_{\theta=\theta_0}
               = \overline{\mathbb{E}_{a\sim\pi}\big[\nabla\log\pi\,\nabla\log\pi^\top\big]},
               \qquad F v = \nabla_\theta\big((\nabla_\theta \overline{\mathrm{KL}})^\top v\big)

    (Pearlmutter's double-backward trick). The gradient of the KL is built once with
    ``create_graph=True``; each product is one more backward pass. Requires: ``kl_fn()``
    returns the mean KL between the *detached* old policy and the current one at the current
    parameters, equal to them (so its Hessian is the Fisher, averaged over states).

    Args:
        kl_fn: ``() -> Tensor`` 0-dim mean :math:`\mathrm{KL}(\pi_{\mathrm{old}}\|\pi_\theta)`.
        params: the tensors :math:`\theta` (``requires_grad=True``), flattened in order.
        damping: :math:`\lambda \ge 0`, added for conditioning.

    Returns:
        A function ``(P,) -> (P,)``, ``P`` the total number of parameter elements.

    References:
        Pearlmutter (1994), Fast exact multiplication by the Hessian. Schulman et al. (2015),
        Trust Region Policy Optimization, appendix C.
    """
    params = _check_param_list(params)
    if not isinstance(damping, (int, float)) or not damping >= 0:
        raise ValueError(f"damping: expected a float >= 0, got {damping!r}")
    kl = kl_fn()
    grads = torch.autograd.grad(kl, params, create_graph=True, allow_unused=True)
    flat_grad = _flat(grads, params)
    if not flat_grad.requires_grad:
        raise ValueError("kl_fn: its value does not depend on params (no Fisher to form)")
    n = flat_grad.numel()

    def fvp(v: Tensor) -> Tensor:
        if v.shape != (n,):
            raise ValueError(f"v: expected shape ({n},), got {tuple(v.shape)}")
        hv = torch.autograd.grad(flat_grad @ v, params, retain_graph=True, allow_unused=True)
        return _flat(hv, params).detach() + damping * v

    return fvp


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    r"""Solve :math:`A x = b` for symmetric positive-definite :math:`A` from products :math:`Av`.

    .. math::  x_{k+1} = x_k + \alpha_k p_k,\quad \alpha_k = \frac{r_k^\top r_k}{p_k^\top A p_k},
               \quad p_{k+1} = r_{k+1} + \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k}\, p_k

    Starts from :math:`x_0 = 0`; exact after :math:`P` iterations in exact arithmetic, and in
    practice a few iterations give a good natural-gradient direction.

    Args:
        Avp: ``(P,) -> (P,)`` the product with :math:`A`.
        b: ``(P,)`` right-hand side.
        iters: maximum number of iterations (= products with :math:`A`).
        residual_tol: stop when :math:`\|r\|^2 = \|b - Ax\|^2` falls below it.

    Returns:
        ``(P,)`` the approximate solution :math:`x`.

    References:
        Hestenes & Stiefel (1952); Nocedal & Wright (2006), Numerical Optimization, algorithm 5.2.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= residual_tol:
            break
        Ap = Avp(p)
        pAp = p @ Ap
        if pAp <= 0:  # A is not positive definite along p: stop with the current iterate
            break
        alpha = rr / pAp
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def _backtrack(
    evaluate: Callable[[float], tuple[float, float]],
    expected: float,
    max_kl: float,
    iters: int,
    ratio: float,
    accept_ratio: float,
) -> tuple[int, float, float, float]:
    """TRPO's backtracking: the first ``ratio**k`` whose step keeps KL ≤ ``max_kl`` and improves
    the loss by more than ``accept_ratio`` of the linear prediction. Returns ``(k, fraction,
    kl, improvement)``, with fraction, kl and improvement 0 (and ``k = iters``) if none does."""
    for k in range(iters):
        frac = ratio**k
        kl, improvement = evaluate(frac)
        if kl <= max_kl and improvement > 0 and improvement >= accept_ratio * frac * expected:
            return k, frac, kl, improvement
    return iters, 0.0, 0.0, 0.0


def natural_gradient(
    loss_fn: Callable[[], Tensor],
    kl_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    max_kl: float = 0.01,
    cg_iters: int = 10,
    damping: float = 0.1,
    line_search: bool = True,
    backtrack_iters: int = 10,
    backtrack_ratio: float = 0.8,
    accept_ratio: float = 0.1,
    cg_residual_tol: float = 1e-10,
) -> tuple[Tensor, dict[str, float]]:
    r"""One natural policy gradient (NPG) or TRPO step, applied in place to ``params``.

    With :math:`g = -\nabla_\theta L` the gradient of the surrogate objective and :math:`F` the
    Fisher of the policy (the Hessian of the KL, damped by :math:`\lambda`), conjugate gradient
    solves :math:`F x = g` and the step is scaled to the KL trust region :math:`\delta`:

    .. math::  \Delta\theta = \beta x,\qquad \beta = \sqrt{\frac{2\delta}{x^\top F x}},
               \qquad \tfrac12\,\Delta\theta^\top F\,\Delta\theta = \delta
               \approx \overline{\mathrm{KL}}(\pi_{\theta}\,\|\,\pi_{\theta+\Delta\theta}).

    With ``line_search=True`` (TRPO) the step :math:`\rho^k\Delta\theta`, :math:`k = 0, 1,
    \dots` is accepted at the first :math:`k` where the KL is at most :math:`\delta`, the loss
    decreased, and the decrease is at least ``accept_ratio`` times the linear prediction
    :math:`\rho^k g^\top\Delta\theta`; if none is, the parameters are left unchanged. Without it
    (NPG) the full step is applied.

    Args:
        loss_fn: ``() -> Tensor`` 0-dim surrogate loss (to minimise) at the current params, e.g.
            :math:`-\overline{r_t \hat A_t}` with :math:`r_t = \pi_\theta/\pi_{\mathrm{old}}`.
        kl_fn: ``() -> Tensor`` 0-dim mean :math:`\mathrm{KL}(\pi_{\mathrm{old}}\|\pi_\theta)`,
            the old policy detached and equal to the current one on entry.
        params: policy parameters (``requires_grad=True``), updated in place.
        max_kl: trust-region radius :math:`\delta > 0`.
        cg_iters: conjugate-gradient iterations.
        damping: :math:`\lambda \ge 0` added to the Fisher.
        line_search: backtrack as in TRPO (otherwise plain NPG).
        backtrack_iters: maximum number of step sizes tried.
        backtrack_ratio: :math:`\rho \in (0, 1)`.
        accept_ratio: minimum ratio of actual to predicted improvement.
        cg_residual_tol: ``residual_tol`` of :func:`conjugate_gradient`.

    Returns:
        ``(step, info)``: the flat ``(P,)`` step applied (zeros if rejected) and floats
        ``{"kl", "improvement", "expected_improvement", "step_size", "line_search_steps",
        "accepted", "cg_residual"}``; ``step_size`` is the coefficient applied to :math:`x`,
        ``cg_residual`` is :math:`\|(F + \lambda I)x - g\| / \|g\|`.

    References:
        Kakade (2001), A natural policy gradient. Peters & Schaal (2008), Natural actor-critic.
        Schulman et al. (2015), Trust region policy optimization.
    """
    params = _check_param_list(params)
    max_kl = _check_positive("max_kl", max_kl)
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"backtrack_ratio: expected a float in (0, 1), got {backtrack_ratio!r}")
    loss0 = loss_fn()
    g = -_flat(torch.autograd.grad(loss0, params, allow_unused=True), params)
    loss0 = float(loss0.detach())
    fvp = fisher_vector_product(kl_fn, params, damping)
    x = conjugate_gradient(fvp, g, iters=cg_iters, residual_tol=cg_residual_tol)
    Fx = fvp(x)
    xFx = float(x @ Fx)
    g_norm = float(g.norm())
    residual = float((Fx - g).norm()) / g_norm if g_norm > 0 else 0.0
    beta = math.sqrt(2.0 * max_kl / xFx) if xFx > 0 else 0.0
    full_step = beta * x
    expected = float(g @ full_step)
    old = _flat([p.detach() for p in params], params).clone()

    def evaluate(frac: float) -> tuple[float, float]:
        _set_flat(params, old + frac * full_step)
        with torch.no_grad():
            return float(kl_fn()), loss0 - float(loss_fn())

    if line_search:
        k, frac, kl, improvement = _backtrack(
            evaluate, expected, max_kl, backtrack_iters, backtrack_ratio, accept_ratio
        )
    else:
        (kl, improvement), k, frac = evaluate(1.0), 0, 1.0
    accepted = frac > 0
    if not accepted:
        _set_flat(params, old)
    info = {
        "kl": kl,
        "improvement": improvement,
        "expected_improvement": frac * expected,
        "step_size": frac * beta,
        "line_search_steps": float(k),
        "accepted": float(accepted),
        "cg_residual": residual,
    }
    return frac * full_step, info
