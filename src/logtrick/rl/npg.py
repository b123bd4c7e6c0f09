r"""Natural policy gradient: conjugate gradient on Fisher-vector products in a KL trust region.

The Fisher information of the policy, :math:`F = \mathbb{E}[\nabla\log\pi\,\nabla\log\pi^\top]`
(the covariance of the score), equals the Hessian of the KL divergence between the old and the
current policy at the old parameters. So :math:`Fv` is a Hessian-vector product of the mean KL
(Pearlmutter's double backward), and :math:`F^{-1}g` is found by conjugate gradient without ever
forming :math:`F`. Split from ``losses.py`` to keep both modules small; ``losses`` re-exports it.

References: Kakade (2001), A Natural Policy Gradient; Peters & Schaal (2008), Natural
Actor-Critic; Schulman et al. (2015), Trust Region Policy Optimization.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from logtrick.checks import check_in_range, check_nonnegative, check_param_list, check_positive

__all__ = ["conjugate_gradient", "fisher_vector_product", "natural_gradient"]


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
    params = check_param_list("params", params, requires_grad=True, nonempty=True)
    damping = check_nonnegative("damping", damping)
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
    reduce: Callable[[Tensor], Tensor] | None = None,
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
        reduce: data parallelism: ``(k,) -> (k,)`` the mean over the ranks (weighted by their
            batch sizes), applied to the gradient, to every Fisher-vector product and to the
            line search's KL and loss: every rank then runs the same CG iterations and accepts
            the same step, the one of one process on the concatenated batch.

    Returns:
        ``(step, info)``: the flat ``(P,)`` step applied (zeros if rejected) and floats
        ``{"kl", "improvement", "expected_improvement", "step_size", "line_search_steps",
        "accepted", "cg_residual"}``; ``step_size`` is the coefficient applied to :math:`x`,
        ``cg_residual`` is :math:`\|(F + \lambda I)x - g\| / \|g\|`.

    References:
        Kakade (2001), A natural policy gradient. Peters & Schaal (2008), Natural actor-critic.
        Schulman et al. (2015), Trust region policy optimization.
    """
    params = check_param_list("params", params, requires_grad=True, nonempty=True)
    max_kl = check_positive("max_kl", max_kl)
    damping = check_nonnegative("damping", damping)
    check_in_range("backtrack_ratio", backtrack_ratio, 0.0, 1.0, low_open=True, high_open=True)
    mean = reduce if reduce is not None else (lambda x: x)
    loss0_t = loss_fn()
    g = mean(-_flat(torch.autograd.grad(loss0_t, params, allow_unused=True), params))
    loss0 = float(mean(loss0_t.detach().reshape(1))[0])
    local_fvp = fisher_vector_product(kl_fn, params, 0.0)

    def fvp(v: Tensor) -> Tensor:  # the mean Fisher of all ranks, damped
        return mean(local_fvp(v)) + damping * v

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
            kl, loss = mean(torch.stack([kl_fn(), loss_fn()]).detach()).tolist()
        return kl, loss0 - loss

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
