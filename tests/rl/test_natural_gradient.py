"""Tests of the natural gradient: Fisher-vector products, conjugate gradient, the KL trust region.

References used for the known answers: the Fisher of a linear-softmax policy is
``s sᵀ ⊗ (diag π − π πᵀ)`` per state; that of a Gaussian with linear mean ``S A`` and
state-independent ``log σ`` is ``s sᵀ ⊗ diag(σ⁻²)`` for ``A`` and ``2 I`` for ``log σ``; for a
softmax bandit the natural gradient of ``J = Σ π_a r_a`` is ``r − mean(r)`` (Kakade 2001).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import pytest
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence

import logtrick as lt
from logtrick.rl.npg import conjugate_gradient, fisher_vector_product, natural_gradient
from logtrick.scores import flatten_scores

torch.set_num_threads(1)
f64 = torch.float64


def _z(failure_rate: float, checks: int) -> float:
    """Two-sided normal quantile for a total failure rate, Bonferroni over ``checks``."""
    return NormalDist().inv_cdf(1.0 - failure_rate / (2 * checks))


@dataclass
class Problem:
    """A small policy over ``n_s`` fixed states with known exact Fisher (mean over states)."""

    dist_fn: Callable[[list[Tensor]], Distribution]
    params: list[Tensor]
    exact_fisher: Callable[[], Tensor]
    states: Tensor

    @property
    def n_states(self) -> int:
        return self.states.shape[0]

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.params)

    def kl_fn(self) -> Callable[[], Tensor]:
        """Mean KL(π_old ‖ π_θ) with π_old frozen at the current parameters."""
        old = [p.detach().clone() for p in self.params]
        return lambda: kl_divergence(self.dist_fn(old), self.dist_fn(self.params)).mean()

    def surrogate_fn(self, seed: int) -> Callable[[], Tensor]:
        """Importance-sampled surrogate loss −mean(π/π_old · Â) on actions drawn from π_old."""
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # sample() draws from the global generator
        with torch.no_grad():
            old = self.dist_fn([p.detach() for p in self.params])
            actions = old.sample((8,))
            old_log_probs = old.log_prob(actions)
        adv = torch.randn(old_log_probs.shape, generator=g, dtype=f64)
        return lambda: (
            -((self.dist_fn(self.params).log_prob(actions) - old_log_probs).exp() * adv).mean()
        )


def categorical_problem(seed: int, n_s: int = 5, d: int = 3, n_a: int = 4) -> Problem:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n_s, d, generator=g, dtype=f64)
    W = torch.randn(d, n_a, generator=g, dtype=f64).requires_grad_(True)

    def dist_fn(ps: list[Tensor]) -> Distribution:
        return Categorical(logits=states @ ps[0])

    def exact() -> Tensor:
        probs = torch.softmax(states @ W.detach(), -1)
        blocks = [
            torch.kron(torch.outer(s, s), torch.diag(p) - torch.outer(p, p))
            for s, p in zip(states, probs)
        ]
        return torch.stack(blocks).mean(0)

    return Problem(dist_fn, [W], exact, states)


def gaussian_problem(seed: int, n_s: int = 5, d: int = 3, k: int = 2) -> Problem:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(n_s, d, generator=g, dtype=f64)
    A = torch.randn(d, k, generator=g, dtype=f64).requires_grad_(True)
    log_std = (0.3 * torch.randn(k, generator=g, dtype=f64)).requires_grad_(True)

    def dist_fn(ps: list[Tensor]) -> Distribution:
        return Independent(Normal(states @ ps[0], ps[1].exp()), 1)

    def exact() -> Tensor:
        inv_var = torch.diag((-2 * log_std.detach()).exp())
        mean_block = torch.stack([torch.kron(torch.outer(s, s), inv_var) for s in states]).mean(0)
        return torch.block_diag(mean_block, 2.0 * torch.eye(k, dtype=f64))

    return Problem(dist_fn, [A, log_std], exact, states)


PROBLEMS = {"categorical": categorical_problem, "gaussian": gaussian_problem}


def _enumerated_fisher(logits: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """Brute force: mean over states of Σ_a π(a|s) ∇log π(a|s) ∇log π(a|s)ᵀ."""
    J = torch.autograd.functional.jacobian(lambda t: torch.log_softmax(logits(t), -1), theta)
    probs = torch.softmax(logits(theta), -1).detach()
    return torch.einsum("sa,sap,saq->pq", probs, J, J) / probs.shape[0]


# ------------------------------------------------------------------ (1) Fisher-vector product


def test_closed_form_categorical_fisher_matches_enumeration() -> None:
    problem = categorical_problem(0)
    W, states = problem.params[0], problem.states
    F = _enumerated_fisher(lambda t: states @ t.reshape(W.shape), W.detach().reshape(-1))
    torch.testing.assert_close(problem.exact_fisher(), F, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("seed", [0, 1])
def test_fvp_equals_exact_fisher_times_v(name: str, seed: int) -> None:
    problem = PROBLEMS[name](seed)
    damping = 0.1
    fvp = fisher_vector_product(problem.kl_fn(), problem.params, damping)
    F = problem.exact_fisher() + damping * torch.eye(problem.size, dtype=f64)
    g = torch.Generator().manual_seed(100 + seed)
    for _ in range(3):
        v = torch.randn(problem.size, generator=g, dtype=f64)
        torch.testing.assert_close(fvp(v), F @ v, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fvp(v), F @ v, rtol=1e-10, atol=1e-10)


def test_fvp_of_mlp_policy_equals_enumerated_fisher() -> None:
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    net = net.to(f64)
    states = torch.randn(6, 3, dtype=f64)
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]
    old = [p.detach().clone() for p in params]

    def logits_of(ps: list[Tensor]) -> Tensor:
        return torch.func.functional_call(net, dict(zip(names, ps)), (states,))

    def kl_fn() -> Tensor:
        return kl_divergence(
            Categorical(logits=logits_of(old)), Categorical(logits=logits_of(params))
        ).mean()

    def logits_flat(theta: Tensor) -> Tensor:
        chunks = theta.split([p.numel() for p in params])
        return logits_of([c.view_as(p) for c, p in zip(chunks, params)])

    F = _enumerated_fisher(logits_flat, torch.cat([p.detach().reshape(-1) for p in params]))
    fvp = fisher_vector_product(kl_fn, params, damping=0.0)
    v = torch.randn(F.shape[0], dtype=f64)
    torch.testing.assert_close(fvp(v), F @ v, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_fvp_matches_monte_carlo_fisher(name: str) -> None:
    """lt.fisher is a Monte Carlo sum over the batch of states: F̂/n_s ≈ F_mean.

    Per component j of F̂v, |(F̂v)_j/n_s − (Fv)_j| ≤ z σ̂_j / √N; failure rate 1e-6 over both
    problems, Bonferroni over all components (2 · P checks).
    """
    problem = PROBLEMS[name](3)
    N, P = 20_000, problem.size
    torch.manual_seed(4)
    F_hat = lt.fisher(problem.dist_fn, problem.params, samples=N)
    torch.manual_seed(4)  # the same draws again, for the standard error
    with torch.no_grad():
        x = problem.dist_fn([p.detach() for p in problem.params]).sample((N,))
    s = flatten_scores(lt.score(problem.dist_fn, problem.params, x))
    torch.testing.assert_close(s.T @ s / N, F_hat)

    v = torch.randn(P, generator=torch.Generator().manual_seed(5), dtype=f64)
    fvp = fisher_vector_product(problem.kl_fn(), problem.params, damping=0.0)
    y = s * (s @ v)[:, None] / problem.n_states  # per-sample terms of F̂ v / n_s
    tol = _z(1e-6, checks=2 * P) * y.std(0) / N**0.5
    assert torch.all((F_hat @ v / problem.n_states - fvp(v)).abs() <= tol)


# ---------------------------------------------------------------------- (2) conjugate gradient


def test_cg_on_explicit_spd_matrix_converges_with_decreasing_energy_error() -> None:
    g = torch.Generator().manual_seed(6)
    M = torch.randn(20, 20, generator=g, dtype=f64)
    A = M @ M.T + 0.5 * torch.eye(20, dtype=f64)
    b = torch.randn(20, generator=g, dtype=f64)
    truth = torch.linalg.solve(A, b)
    errors = []
    for iters in range(1, 8):
        e = conjugate_gradient(lambda v: A @ v, b, iters=iters) - truth
        errors.append(float(e @ A @ e))
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    x = conjugate_gradient(lambda v: A @ v, b, iters=60, residual_tol=1e-24)
    torch.testing.assert_close(x, truth, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("seed", [0, 1])
def test_cg_with_fvp_matches_dense_solve(name: str, seed: int) -> None:
    problem = PROBLEMS[name](seed)
    damping = 0.1
    loss = problem.surrogate_fn(seed)()
    grads = torch.autograd.grad(loss, problem.params)
    b = -torch.cat([gr.reshape(-1) for gr in grads])
    fvp = fisher_vector_product(problem.kl_fn(), problem.params, damping)
    x = conjugate_gradient(fvp, b, iters=3 * problem.size, residual_tol=1e-28)
    F = problem.exact_fisher() + damping * torch.eye(problem.size, dtype=f64)
    torch.testing.assert_close(x, torch.linalg.solve(F, b), rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------ (3) the trust region


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_npg_step_is_scaled_natural_direction(name: str) -> None:
    problem = PROBLEMS[name](7)
    loss_fn, delta, damping = problem.surrogate_fn(7), 0.01, 0.1
    b = -torch.cat([gr.reshape(-1) for gr in torch.autograd.grad(loss_fn(), problem.params)])
    F = problem.exact_fisher() + damping * torch.eye(problem.size, dtype=f64)
    kl_fn = problem.kl_fn()
    step, info = natural_gradient(
        loss_fn, kl_fn, problem.params, max_kl=delta, cg_iters=3 * problem.size,
        damping=damping, line_search=False, cg_residual_tol=1e-30,
    )  # fmt: skip
    x = torch.linalg.solve(F, b)
    torch.testing.assert_close(step, (2 * delta / (x @ F @ x)).sqrt() * x, rtol=1e-6, atol=1e-9)
    assert float(0.5 * step @ F @ step) == pytest.approx(delta, rel=1e-6)
    assert info["cg_residual"] < 1e-6 and info["accepted"] == 1.0
    with torch.no_grad():
        assert info["kl"] == pytest.approx(kl_fn().item(), rel=1e-12)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_kl_without_line_search_is_delta_to_first_order(name: str) -> None:
    """½ sᵀ(F + λI)s = δ exactly, and KL(step) = ½ sᵀFs + O(|s|³) with |s| ∝ √δ: with a tiny
    damping the relative error |KL/δ − 1| shrinks like √δ (by 10 from δ = 1e-3 to 1e-5; the
    check allows 5). Seed 8 has a non-vanishing third-order term for both policies."""
    errors = []
    for delta in (1e-3, 1e-5):
        problem = PROBLEMS[name](8)
        kl_fn = problem.kl_fn()
        natural_gradient(
            problem.surrogate_fn(8), kl_fn, problem.params, max_kl=delta,
            cg_iters=3 * problem.size, damping=1e-6, line_search=False, cg_residual_tol=1e-30,
        )  # fmt: skip
        with torch.no_grad():
            errors.append(abs(kl_fn().item() / delta - 1.0))
    assert errors[1] <= 0.2 * errors[0]
    assert errors[1] < 0.02


def test_line_search_keeps_kl_within_delta() -> None:
    """TRPO: the accepted step has KL ≤ δ on every seed, where plain NPG overshoots on some."""
    delta, overshoots = 0.5, 0
    for name, seed in itertools.product(PROBLEMS, range(6)):
        npg = PROBLEMS[name](seed)
        kl_npg = npg.kl_fn()
        natural_gradient(
            npg.surrogate_fn(seed), kl_npg, npg.params, max_kl=delta, line_search=False
        )
        with torch.no_grad():
            overshoots += kl_npg().item() > delta

        problem = PROBLEMS[name](seed)
        kl_fn, loss_fn = problem.kl_fn(), problem.surrogate_fn(seed)
        with torch.no_grad():
            loss0 = loss_fn().item()
        _, info = natural_gradient(loss_fn, kl_fn, problem.params, max_kl=delta)
        with torch.no_grad():
            kl, loss1 = kl_fn().item(), loss_fn().item()
        assert info["accepted"] == 1.0
        assert kl <= delta
        assert info["kl"] == pytest.approx(kl, rel=1e-12)
        assert info["improvement"] == pytest.approx(loss0 - loss1, rel=1e-12) and loss1 < loss0
    assert overshoots > 0  # the line search had work to do


@pytest.mark.parametrize("kind", ["flat", "steep"])
def test_rejected_step_leaves_params_unchanged(kind: str) -> None:
    """A flat loss (g = 0) or one that rises steeply around θ₀ in every direction: no tried
    step improves it, so the parameters are restored and the applied step is zero."""
    problem = categorical_problem(9)
    (W,) = problem.params
    W0, c = W.detach().clone(), torch.ones_like(W)
    if kind == "flat":
        loss_fn = lambda: (W * 0.0).sum() + 1.0  # noqa: E731
    else:
        loss_fn = lambda: -(W * c).sum() + 1e6 * (W - W0).pow(2).sum()  # noqa: E731
    step, info = natural_gradient(loss_fn, problem.kl_fn(), problem.params, max_kl=0.01)
    assert info["accepted"] == 0.0 and info["step_size"] == 0.0
    assert info["line_search_steps"] == 10.0
    assert torch.equal(step, torch.zeros(problem.size, dtype=f64))
    assert torch.equal(W.detach(), W0)


# ------------------------------------------------------------------------ (4) it makes progress


def test_softmax_bandit_natural_gradient_is_centered_reward() -> None:
    """Tabular softmax: F⁺∇J = r − mean(r) and xᵀFx = Var_π[r] (Kakade 2001), so the NPG step
    is exactly √(2δ / Var_π[r]) · (r − mean r)."""
    rewards = torch.tensor([1.0, 0.0, 3.0, -1.0], dtype=f64)
    theta = torch.tensor([0.2, -0.4, 0.1, 0.5], dtype=f64, requires_grad=True)
    old = theta.detach().clone()
    probs = torch.softmax(old, 0)
    var = float(probs @ rewards**2 - (probs @ rewards) ** 2)
    delta = 1e-4
    step, _ = natural_gradient(
        lambda: -(torch.softmax(theta, 0) @ rewards),
        lambda: kl_divergence(Categorical(logits=old), Categorical(logits=theta)),
        [theta], max_kl=delta, cg_iters=8, damping=1e-10, line_search=False,
    )  # fmt: skip
    expected = (2 * delta / var) ** 0.5 * (rewards - rewards.mean())
    torch.testing.assert_close(step, expected, rtol=1e-6, atol=1e-9)


def test_trpo_steps_improve_bandit_monotonically_to_the_best_arm() -> None:
    rewards = torch.tensor([1.0, 0.0, 3.0, -1.0], dtype=f64)
    theta = torch.zeros(4, dtype=f64, requires_grad=True)
    values = [float(torch.softmax(theta.detach(), 0) @ rewards)]
    for _ in range(10):
        old = theta.detach().clone()
        _, info = natural_gradient(
            lambda: -(torch.softmax(theta, 0) @ rewards),
            lambda old=old: kl_divergence(Categorical(logits=old), Categorical(logits=theta)),
            [theta], max_kl=0.05,
        )  # fmt: skip
        assert info["improvement"] > 0 and info["kl"] <= 0.05
        values.append(float(torch.softmax(theta.detach(), 0) @ rewards))
    assert all(b > a for a, b in itertools.pairwise(values))
    assert values[-1] > 2.9  # the best arm pays 3


# ---------------------------------------------------------------------------------- bad input


def test_bad_input_is_reported() -> None:
    problem = categorical_problem(0)
    with pytest.raises(TypeError, match="params: expected a list"):
        fisher_vector_product(problem.kl_fn(), problem.params[0])
    with pytest.raises(ValueError, match=r"params\[0\]: expected requires_grad=True"):
        fisher_vector_product(problem.kl_fn(), [torch.zeros(2)])
    with pytest.raises(ValueError, match="damping"):
        fisher_vector_product(problem.kl_fn(), problem.params, damping=-1.0)
    with pytest.raises(ValueError, match=r"v: expected shape \(12,\)"):
        fisher_vector_product(problem.kl_fn(), problem.params)(torch.zeros(3, dtype=f64))
    with pytest.raises(ValueError, match="max_kl"):
        natural_gradient(problem.surrogate_fn(0), problem.kl_fn(), problem.params, max_kl=0.0)
    with pytest.raises(ValueError, match="backtrack_ratio"):
        natural_gradient(
            problem.surrogate_fn(0), problem.kl_fn(), problem.params, backtrack_ratio=1
        )
