r"""Tests of the magic box and ``lt.surrogate``.

(a) Deterministic: the value is exactly the cost; the one-sample gradient is the hand formula
:math:`(c - b)\nabla\log p + \nabla c`; the DiCE second derivative of one sample is
:math:`c\,(\partial_\mu s_\mu + s_\mu^2)`. (b) Statistical: second derivatives through the
surrogate are unbiased for Normal with f = x² (∂²E/∂μ² = ∂²E/∂σ² = 2, ∂²E/∂μ∂σ = 0), tolerance
z·SE with the failure rate stated in the test, Bonferroni over the entries.

References: Foerster et al. (2018), DiCE: The Infinitely Differentiable Monte Carlo Estimator.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Normal

import logtrick as lt
from stats import assert_mean

DT = torch.float64


def t(*values: float) -> Tensor:
    """A float64 tensor (a scalar for one value)."""
    return torch.tensor(values if len(values) != 1 else values[0], dtype=DT)


def test_magic_box_is_one_with_the_gradient_of_its_argument() -> None:
    """⊡(ℓ) == 1 exactly, and ∇⊡(ℓ) = ∇ℓ."""
    theta = t(0.3, -2.0, 5.0).requires_grad_()
    log_prob = Normal(theta, 1.0).log_prob(t(1.0, 1.0, 1.0))
    box = lt.magic_box(log_prob)
    assert torch.equal(box, torch.ones(3, dtype=DT))
    box.sum().backward()
    torch.testing.assert_close(theta.grad, 1.0 - theta.detach())


def _normal_sample_cost() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    mu, sigma, w = t(0.4).requires_grad_(), t(1.3).requires_grad_(), t(2.0).requires_grad_()
    x = t(1.1, -0.2, 0.5)
    return mu, sigma, w, x, Normal(mu, sigma).log_prob(x)


@pytest.mark.parametrize(
    "baseline",
    [None, 1.5, t(0.2, 0.3, 0.4), "moving_average", "leave_one_out", lt.MovingAverage()],
    ids=["none", "float", "tensor", "ma_name", "loo", "ma_object"],
)
def test_value_equals_cost_exactly(baseline: object) -> None:
    """The surrogate's value is bit-for-bit the cost, whatever the baseline."""
    _, _, w, x, log_prob = _normal_sample_cost()
    cost = w * x**2 + 10.0
    out = lt.surrogate(cost, log_prob, baseline)
    assert torch.equal(out.detach(), cost.detach())


def test_value_equals_cost_with_learned_and_optimal_scale() -> None:
    """Learned (folded loss has value zero) and OptimalScale (value-zero terms) keep the value."""
    mu, sigma, w, x, log_prob = _normal_sample_cost()
    cost = w * x**2
    learned = lt.Learned(nn.Linear(2, 1).to(DT))
    out = lt.surrogate(cost, log_prob, learned, context=torch.randn(2, dtype=DT))
    assert torch.equal(out.detach(), cost.detach())
    out = lt.surrogate(cost, log_prob, lt.OptimalScale([mu, sigma]))
    assert torch.equal(out.detach(), cost.detach())


def test_one_sample_gradient_matches_hand_formula() -> None:
    """(a) ∇L = (c − b)∇log p + ∇c for Normal(μ, σ), c = w·x², b = 0.7, one sample."""
    mu, sigma, w = t(0.4).requires_grad_(), t(1.3).requires_grad_(), t(2.0).requires_grad_()
    x = t(1.1)
    cost = w * x**2
    lt.surrogate(cost, Normal(mu, sigma).log_prob(x), 0.7).backward()
    c = 2.0 * 1.1**2 - 0.7
    torch.testing.assert_close(mu.grad, t(c * (1.1 - 0.4) / 1.3**2))
    torch.testing.assert_close(sigma.grad, t(c * ((1.1 - 0.4) ** 2 - 1.3**2) / 1.3**3))
    torch.testing.assert_close(w.grad, t(1.1**2))


def test_leave_one_out_gradient_matches_hand_formula() -> None:
    """(a) K = 3, b_k = mean of the others: ∇μ L̄ = (1/K) Σ (c_k − b_k)(x_k − μ)/σ²."""
    mu, _, _, x, log_prob = _normal_sample_cost()
    cost = x**2
    lt.surrogate(cost, log_prob, "leave_one_out").mean().backward()
    b = (cost.sum() - cost) / 2
    torch.testing.assert_close(mu.grad, ((cost - b) * (x - 0.4) / 1.3**2).mean())


def test_sample_dim_selects_the_sample_axis() -> None:
    """sample_dim=1 on cost (B, K) equals sample_dim=0 on its transpose."""
    torch.manual_seed(0)
    theta = torch.randn(4, 1, dtype=DT, requires_grad=True)
    x = torch.randn(4, 5, dtype=DT)
    grads = []
    for dim, xx in ((1, x), (0, x.T)):
        theta.grad = None
        mean = theta if dim == 1 else theta.T
        lt.surrogate(xx**2, Normal(mean, 1.0).log_prob(xx), "leave_one_out", dim).sum().backward()
        grads.append(theta.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_learned_loss_is_folded_with_value_zero() -> None:
    """fold_loss: the module's gradient is ∇φ ½ mean (g(ctx) − c)²; fold_loss=False: none."""
    torch.manual_seed(1)
    mu, _, _, x, log_prob = _normal_sample_cost()
    cost = x**2
    ctx = torch.randn(2, dtype=DT)
    net = nn.Linear(2, 1).to(DT)
    lt.surrogate(cost, log_prob, lt.Learned(net), context=ctx).mean().backward()
    expected = torch.autograd.grad(lt.Learned(net).loss(cost, ctx), net.weight)[0]
    torch.testing.assert_close(net.weight.grad, expected)
    b = net(ctx).detach()  # and the score term uses b, detached
    torch.testing.assert_close(mu.grad, ((cost - b) * (x - 0.4) / 1.3**2).mean())
    net.zero_grad(set_to_none=True)
    lp = Normal(t(0.4).requires_grad_(), 1.3).log_prob(x)
    lt.surrogate(cost, lp, lt.Learned(net, fold_loss=False), context=ctx).mean().backward()
    assert net.weight.grad is None


def test_second_derivative_one_sample_matches_hand_formula() -> None:
    """(a) DiCE: ∂²L/∂μ² = c((x − μ)²/σ⁴ − 1/σ²) for c = x² and no baseline."""
    mu = t(0.4).requires_grad_()
    x = t(1.1)
    out = lt.surrogate(x**2, Normal(mu, 1.3).log_prob(x))
    (g,) = torch.autograd.grad(out, mu, create_graph=True)
    (h,) = torch.autograd.grad(g, mu)
    torch.testing.assert_close(h, t(1.1**2 * ((1.1 - 0.4) ** 2 / 1.3**4 - 1 / 1.3**2)))


@pytest.mark.parametrize("baseline", [None, 1.5])
def test_second_derivatives_are_unbiased(baseline: object) -> None:
    """(b) Normal, f = x²: E = μ² + σ²; Hessian [[2, 0], [0, 2]] from R replicas of K samples.

    Failure rate 1e-3 per test, Bonferroni over the 3 distinct Hessian entries.
    """
    torch.manual_seed(2)
    r, k = 4000, 4
    mu = torch.full((r,), 0.3, dtype=DT, requires_grad=True)
    sigma = torch.full((r,), 1.2, dtype=DT, requires_grad=True)
    dist = Normal(mu, sigma)
    x = dist.sample((k,))
    out = lt.surrogate(x**2, dist.log_prob(x), baseline).mean(0).sum()
    g_mu, g_sigma = torch.autograd.grad(out, [mu, sigma], create_graph=True)
    h_mumu, h_musigma = torch.autograd.grad(g_mu.sum(), [mu, sigma], retain_graph=True)
    (h_sigmasigma,) = torch.autograd.grad(g_sigma.sum(), sigma)
    draws = torch.stack([h_mumu, h_musigma, h_sigmasigma], 1)
    assert_mean(draws, t(2.0, 0.0, 2.0), 1e-3, what=f"Hessian, baseline {baseline}")


def test_second_derivative_through_expectation() -> None:
    """(b) The same through lt.expectation with the score-function estimator: ∂²E/∂μ² = 2.

    Failure rate 1e-3.
    """
    torch.manual_seed(3)
    mu = torch.full((4000,), 0.3, dtype=DT, requires_grad=True)
    value = lt.expectation(lambda x: x**2, Normal(mu, 1.2), 4, "score_function")
    (g,) = torch.autograd.grad(value.sum(), mu, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), mu)
    assert_mean(h[:, None], t(2.0), 1e-3, what="d²E/dμ² via expectation")


def test_expectation_value_is_the_monte_carlo_mean() -> None:
    """(a) lt.expectation's value is exactly (1/K) Σ f(x_k) of the samples drawn (same seed)."""
    loc = torch.zeros(3, dtype=DT, requires_grad=True)
    torch.manual_seed(9)
    value = lt.expectation(lambda x: x**2, Normal(loc, 1.0), 6, "score_function", "leave_one_out")
    torch.manual_seed(9)
    x = Normal(loc, 1.0).sample((6,))
    assert torch.equal(value.detach(), (x**2).mean(0))


def test_score_function_terms_one_sample_match_hand_formula() -> None:
    """(a) K = 1, constant b: ∇μ = (f(x) − b)(x − μ)/σ², ∇σ = (f(x) − b)((x − μ)² − σ²)/σ³."""
    mu, sigma = t(0.4).requires_grad_(), t(1.3).requires_grad_()
    x = t([1.1])
    terms = lt.ScoreFunction().terms_at(lambda v: v**2, Normal(mu, sigma), x, 0.5, None)
    terms.mean(0).backward()
    c = 1.1**2 - 0.5
    torch.testing.assert_close(mu.grad, t(c * (1.1 - 0.4) / 1.3**2))
    torch.testing.assert_close(sigma.grad, t(c * ((1.1 - 0.4) ** 2 - 1.3**2) / 1.3**3))


@pytest.mark.parametrize("baseline", [None, 1.5, "moving_average", "leave_one_out"])
def test_integer_and_bool_costs_equal_float_costs(baseline: object) -> None:
    """f returning integer (Categorical index) or bool costs acts as its float version: a float
    constant baseline is not truncated and the moving average can average it."""
    grads = []
    for cast in (lambda x: x, lambda x: x.to(DT), lambda x: x > 0, lambda x: (x > 0).to(DT)):
        theta = torch.zeros(3, dtype=DT, requires_grad=True)
        b = baseline
        if baseline == "moving_average":
            b = lt.MovingAverage()
            b(torch.ones(8, dtype=DT))  # one past call, so that b != 0
        torch.manual_seed(12)
        lt.expectation(cast, Categorical(logits=theta), 8, "score_function", b).backward()
        grads.append(theta.grad)
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[2], grads[3])


def test_baseline_enters_as_a_constant_in_every_derivative() -> None:
    """(a) b = g(θ) (critic values sharing parameters with the policy, say) changes no
    derivative's dependence on θ through b: first and second derivatives equal those with
    b.detach() (issue 11: b enters the score term detached)."""
    theta = t(0.4, -0.2).requires_grad_()
    x = t([[1.1, -0.3], [0.2, 0.9], [-0.5, 0.4]])
    results = []
    for detach in (False, True):
        b = (theta**2 + 1.0).expand(3, 2)
        b = b.detach() if detach else b
        out = lt.surrogate(x**2, Normal(theta, 1.0).log_prob(x), b).sum()
        (g,) = torch.autograd.grad(out, theta, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), theta)
        results.append((g.detach(), h))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    c = x**2 - (theta.detach() ** 2 + 1.0)  # and the first derivative is the hand formula
    torch.testing.assert_close(results[1][0], (c * (x - theta.detach())).sum(0))


@pytest.mark.parametrize("shape", [(5, 3), (3,), (1, 3), ()])
def test_tensor_baseline_of_critic_values_matches_hand_formula(shape: tuple[int, ...]) -> None:
    """(a) A tensor baseline (K, B), (B,), (1, B) or () gives (c − b)∇log p per element."""
    torch.manual_seed(4)
    mu = torch.randn(3, dtype=DT, requires_grad=True)
    x = torch.randn(5, 3, dtype=DT)
    b = torch.randn(shape, dtype=DT)
    out = lt.surrogate(x**2, Normal(mu, 1.0).log_prob(x), b)
    assert torch.equal(out.detach(), x**2)
    out.sum().backward()
    torch.testing.assert_close(mu.grad, ((x**2 - b) * (x - mu.detach())).sum(0))


@pytest.mark.parametrize("reduce", [False, True])
@pytest.mark.parametrize("baseline", [None, 0.7, "tensor"])
def test_fused_score_term_equals_the_magic_box(
    baseline: object, reduce: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(c) dice.score_term, fused (ScoreTerm) and native, against DiCE written out with the
    magic box, c ⊡(l) + (1 − ⊡(l)) b: the same value, first and second derivatives, in θ and in
    a parameter w of the cost."""
    from logtrick import dice

    torch.manual_seed(5)
    x = torch.randn(4, 3, dtype=DT)
    b = torch.randn(3, dtype=DT) if baseline == "tensor" else baseline

    def written_out(cost: Tensor, log_prob: Tensor, *_: object) -> Tensor:
        box = lt.magic_box(log_prob)
        out = cost * box if b is None else cost * box + (1.0 - box) * b
        return out.mean(0) if reduce else out

    results = []
    for threshold in (None, 0, 1 << 62):  # written out, fused, native (fused if b is given)
        if threshold is not None:
            monkeypatch.setattr(dice, "FUSED_MIN_NUMEL", threshold)
        build = written_out if threshold is None else dice.score_term
        mu, w = t(0.4, -0.1, 0.3).requires_grad_(), t(1.5).requires_grad_()
        out = build(w * x**3, Normal(mu, 1.0).log_prob(x), b, reduce)
        g = torch.autograd.grad(out.sum(), [mu, w], create_graph=True)
        h = torch.autograd.grad(g[0].sum() + g[1], [mu, w])
        results.append([out.detach(), *(v.detach() for v in g), *h])
    for reference, fused, native in zip(*results):
        torch.testing.assert_close(fused, reference)
        torch.testing.assert_close(native, reference)
    assert torch.equal(results[1][0], results[0][0])  # values bit for bit
    assert torch.equal(results[2][0], results[0][0])


def test_fused_score_term_refuses_an_input_modified_in_place() -> None:
    """Like a saved tensor: modifying the cost after building the term is an error."""
    from logtrick.dice import ScoreTerm

    mu = t(0.4).requires_grad_()
    x = t(1.1, -0.3)
    for reduce in (True, False):  # not reduced, the output is a view: torch refuses the change
        cost = x**2
        out = ScoreTerm.apply(cost, Normal(mu, 1.0).log_prob(x), None, reduce)
        with pytest.raises(RuntimeError, match=r"modified in ?place"):
            cost.add_(1.0)
            out.sum().backward()
