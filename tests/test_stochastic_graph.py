r"""Tests of ``dice_surrogate``: several stochastic nodes, each score times its downstream costs.

(a) Deterministic: the value is exactly the sum of the costs; the one-sample gradient of a
two-node model equals the hand formula; named and indexed dependencies agree; bad input fails.
(b) Statistical, against exact expectations (hand sums over the discrete supports, closed forms
for Normal moments): the Rao-Blackwellised and the naive estimators of a two-stage model are
both unbiased, and the naive one has measurably higher variance; the second derivatives of the
surrogate are unbiased estimates of the Hessian for Normal and Bernoulli with polynomial costs
and for the two-stage model, with and without baselines; and a construction without the magic
box of the union (one box per node) is detected as biased. Tolerances are z·SE with the failure
rate stated in each test, Bonferroni over all entries checked in it.

References: Schulman et al. (2015), Gradient Estimation Using Stochastic Computation Graphs;
Foerster et al. (2018), DiCE: The Infinitely Differentiable Monte Carlo Estimator.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Normal

import logtrick as lt
from logtrick.stochastic_graph import chain_dependencies, dice_surrogate
from stats import assert_mean, z_bonferroni, z_scores

DT = torch.float64


def t(*values: float) -> Tensor:
    """A float64 tensor (a scalar for one value)."""
    return torch.tensor(values if len(values) != 1 else values[0], dtype=DT)


# ---------------------------------------------------------------------------------------------
# (a) deterministic


def _three_costs() -> tuple[list[Tensor], list[Tensor], Tensor]:
    theta = t(0.3, -0.4).requires_grad_()
    x1, x2 = t(1.0, 0.0, 1.0, 1.0), t(0.0, 0.0, 1.0, 1.0)
    lp1 = Bernoulli(logits=theta[0]).log_prob(x1)
    lp2 = Bernoulli(logits=theta[1] + x1).log_prob(x2)
    costs = [3.1 * x1 + 0.7, (x1 - x2) ** 2 / 3.0, t(0.1, 0.2, 0.3, 0.4) * x2]
    return costs, [lp1, lp2], theta


@pytest.mark.parametrize(
    "baselines",
    [None, [1.5, -2.0], {0: "leave_one_out", 1: "moving_average"}, [t(0.1, 0.2, 0.3, 0.4), 0.0]],
    ids=["none", "floats", "names", "tensor"],
)
def test_value_equals_the_sum_of_the_costs_exactly(baselines: object) -> None:
    """Bit-for-bit c1 + c2 + c3, whatever the baselines."""
    costs, log_probs, _ = _three_costs()
    out = dice_surrogate(costs, log_probs, [[0], [0, 1], [0, 1]], baselines)
    assert out.shape == costs[0].shape
    assert torch.equal(out.detach(), costs[0] + costs[1] + costs[2])


def test_one_sample_gradient_is_the_hand_formula() -> None:
    r"""Normal x1 ~ N(μ1, 1), x2 ~ N(μ2 + x1, 1), costs c1 = w x1 (after x1), c2 = w x1 x2
    (after both): ∂/∂μ1 = (c1 + c2 - b1)(x1 - μ1), ∂/∂μ2 = (c2 - b2)(x2 - μ2 - x1) and
    ∂/∂w = x1 + x1 x2 (the costs' own gradient)."""
    mu, w = t(0.2, -0.5).requires_grad_(), t(1.5).requires_grad_()
    x1, x2 = t(0.7), t(-0.3)
    lp1, lp2 = Normal(mu[0], 1.0).log_prob(x1), Normal(mu[1] + x1, 1.0).log_prob(x2)
    c1, c2 = w * x1, w * x1 * x2
    b1, b2 = 0.4, -0.25
    out = dice_surrogate(
        {"c1": c1, "c2": c2},
        {"x1": lp1, "x2": lp2},
        {"c1": ["x1"], "c2": ["x1", "x2"]},
        {"x1": b1, "x2": b2},
    )
    out.backward()
    s1, s2 = x1 - mu[0].detach(), x2 - mu[1].detach() - x1  # ∂ log N(x; m, 1)/∂m = x - m
    cost1, cost2 = float(c1.detach()), float(c2.detach())
    expected_mu = torch.stack([(cost1 + cost2 - b1) * s1, (cost2 - b2) * s2])
    torch.testing.assert_close(mu.grad, expected_mu)
    torch.testing.assert_close(w.grad, x1 + x1 * x2)


def test_rao_blackwellised_drops_the_later_score_from_the_earlier_cost() -> None:
    """One sample: θ2's gradient is c2·s2 (not (c1 + c2)·s2), θ1's is (c1 + c2)·s1."""
    costs, log_probs, theta = _three_costs()
    grads = {}
    for name, deps in {"rb": [[0], [0, 1], [0, 1]], "naive": [[0, 1]] * 3}.items():
        out = dice_surrogate(costs, log_probs, deps).sum()
        grads[name] = torch.autograd.grad(out, theta, retain_graph=True)[0]
    c1, later = costs[0], costs[1] + costs[2]
    s1 = torch.stack(
        [torch.autograd.grad(log_probs[0][k], theta, retain_graph=True)[0] for k in range(4)]
    )
    s2 = torch.stack(
        [torch.autograd.grad(log_probs[1][k], theta, retain_graph=True)[0] for k in range(4)]
    )
    rb = ((c1 + later)[:, None] * s1 + later[:, None] * s2).sum(0)
    naive = ((c1 + later)[:, None] * (s1 + s2)).sum(0)
    torch.testing.assert_close(grads["rb"], rb.detach())
    torch.testing.assert_close(grads["naive"], naive.detach())


def test_named_and_indexed_dependencies_agree() -> None:
    costs, log_probs, theta = _three_costs()
    a = dice_surrogate(costs, log_probs, {0: [0], 1: [0, 1], 2: [1, 0]}, {1: 0.5}).sum()
    b = dice_surrogate(
        {"c1": costs[0], "c2": costs[1], "c3": costs[2]},
        {"x1": log_probs[0], "x2": log_probs[1]},
        {"c1": ["x1"], "c2": ("x1", "x2"), "c3": ["x2", "x1"]},
        {"x2": 0.5},
    ).sum()
    ga, gb = (torch.autograd.grad(v, theta, retain_graph=True)[0] for v in (a, b))
    torch.testing.assert_close(ga, gb)


def test_chain_dependencies() -> None:
    assert chain_dependencies(3) == [[0], [0, 1], [0, 1, 2]]
    assert chain_dependencies(0) == []
    with pytest.raises(ValueError, match="num_costs"):
        chain_dependencies(-1)


def test_a_cost_with_no_upstream_node_keeps_its_own_gradient() -> None:
    w = t(2.0).requires_grad_()
    theta = t(0.1).requires_grad_()
    x = t(1.0, 0.0)
    out = dice_surrogate([w * t(1.0, 3.0)], [Bernoulli(logits=theta).log_prob(x)], [[]])
    out.sum().backward()
    assert float(w.grad) == 4.0 and theta.grad is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"depends_on": [[0], [0, 2]]}, ValueError, r"depends_on\[1\]: unknown nodes \[2\]"),
        ({"depends_on": [[0]]}, ValueError, "missing"),
        ({"depends_on": [[0], [1, 1]]}, ValueError, "listed twice"),
        ({"depends_on": [[0], 1]}, TypeError, r"depends_on\[1\]: expected a list"),
        ({"costs": torch.zeros(4)}, TypeError, "costs: expected a list or a dict"),
        ({"costs": [torch.zeros(4), torch.zeros(3)]}, ValueError, "one shape"),
        ({"costs": [torch.zeros(4), torch.tensor([0.0, float("nan"), 0, 0])]}, ValueError,
         r"costs\[1\].*NaN"),
        ({"log_probs": [torch.zeros(4), torch.zeros(2, 4)]}, ValueError,
         r"log_probs\[1\]: shape \(2, 4\)"),
        ({"baselines": {3: 1.0}}, ValueError, "baselines: unknown nodes"),
        ({"baselines": [float("inf"), 0.0]}, ValueError, r"baselines\[0\]"),
        ({"sample_dim": 1}, ValueError, "sample_dim"),
    ],
)  # fmt: skip
def test_bad_input_is_named(kwargs: dict, error: type, match: str) -> None:
    args = {
        "costs": [torch.zeros(4), torch.ones(4)],
        "log_probs": [torch.zeros(4)] * 2,
        "depends_on": [[0], [0, 1]],
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        dice_surrogate(**args)


# ---------------------------------------------------------------------------------------------
# (b) statistical: a two-stage categorical model
#
# x1 ~ Cat(softmax(θ1)), x2 ~ Cat(softmax(θ2[x1])), c1 = A[x1], c2 = G[x1, x2].
# Every estimate below is vectorised over R replicas of the parameters (one independent
# estimate per replica), so the per-replica gradients come out of one backward pass.

A = t(10.0, 12.0, 8.0)  # a large first-stage cost: pure noise when multiplied by x2's score
G = t([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 1.0, -0.5]])
THETA1 = t(0.2, -0.3, 0.1)
THETA2 = t([[0.5, 0.0, -0.5], [-0.2, 0.4, 0.1], [0.0, 0.3, -0.6]])


def two_stage_exact(theta1: Tensor, theta2: Tensor) -> Tensor:
    """E[c1 + c2] by a hand sum over the 3 × 3 support."""
    p1, p2 = theta1.softmax(-1), theta2.softmax(-1)
    return (p1 * (A + (p2 * G).sum(-1))).sum()


def two_stage_surrogate(
    replicas: int, samples: int, depends_on: list[list[int]], baselines: object = None
) -> tuple[Tensor, list[Tensor]]:
    """``(R,)`` per-replica surrogate (mean over K samples) and the replicated parameters."""
    th1 = THETA1.expand(replicas, 3).clone().requires_grad_()
    th2 = THETA2.expand(replicas, 3, 3).clone().requires_grad_()
    d1 = Categorical(logits=th1)
    x1 = d1.sample((samples,))  # (K, R)
    logits2 = th2[torch.arange(replicas), x1]  # (K, R, 3): the row of θ2 chosen by x1
    d2 = Categorical(logits=logits2)
    x2 = d2.sample()
    costs = [A[x1], G[x1, x2]]
    out = dice_surrogate(costs, [d1.log_prob(x1), d2.log_prob(x2)], depends_on, baselines)
    return out.mean(0), [th1, th2]


def _flat_grads(out: Tensor, params: list[Tensor], create_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(out.sum(), params, create_graph=create_graph)
    return list(grads)


def _draws(grads: list[Tensor], replicas: int) -> Tensor:
    return torch.cat([g.reshape(replicas, -1) for g in grads], 1)


def _total_variance(draws: Tensor) -> tuple[float, float]:
    """Trace of the covariance and its standard error (from the per-replica squared norms)."""
    dev = draws - draws.mean(0)
    sq = dev.pow(2).sum(1)
    return float(sq.mean()), float(sq.std() / sq.numel() ** 0.5)


def _exact_gradient() -> Tensor:
    th1, th2 = THETA1.clone().requires_grad_(), THETA2.clone().requires_grad_()
    return torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(two_stage_exact(th1, th2), [th1, th2])]
    )


RB = [[0], [0, 1]]
NAIVE = [[0, 1], [0, 1]]


def test_two_stage_rao_blackwellised_and_naive_are_unbiased_and_rb_has_lower_variance() -> None:
    """Both unbiased (12 gradient entries each, plus RB with leave-one-out baselines at K = 4:
    36 checks) and Var[naive] - Var[RB] > z·(SE_naive + SE_RB) (a bound that holds whatever
    the correlation of the two paired estimates). Family-wise failure rate 1e-3 for the 36 mean
    checks, 1e-3 for the variance comparison."""
    torch.manual_seed(0)
    replicas, exact = 40_000, _exact_gradient()
    draws = {}
    for name, deps, k, baselines in [
        ("rb", RB, 1, None),
        ("naive", NAIVE, 1, None),
        ("rb+loo", RB, 4, ["leave_one_out"] * 2),
    ]:
        out, params = two_stage_surrogate(replicas, k, deps, baselines)
        draws[name] = _draws(_flat_grads(out, params), replicas)
    stacked = torch.stack(list(draws.values()), 1)  # (R, 3, 12)
    assert_mean(stacked, exact.expand(3, -1), alpha=1e-3, what="two-stage gradients")
    (v_rb, se_rb), (v_naive, se_naive) = (
        _total_variance(draws["rb"]),
        _total_variance(draws["naive"]),
    )
    ratio = v_naive / v_rb
    theta2_ratio = (
        _total_variance(draws["naive"][:, 3:])[0] / _total_variance(draws["rb"][:, 3:])[0]
    )
    print(
        f"\ntrace Var: naive {v_naive:.3f} ± {se_naive:.3f}, Rao-Blackwellised {v_rb:.3f} ± "
        f"{se_rb:.3f}, ratio {ratio:.2f} (θ2 block alone: {theta2_ratio:.1f}); RB with "
        f"leave-one-out baselines (K=4): {_total_variance(draws['rb+loo'])[0]:.3f}"
    )
    assert v_naive - v_rb > z_bonferroni(1e-3) * (se_naive + se_rb), (v_naive, v_rb)


# ---------------------------------------------------------------------------------------------
# (b) statistical: second derivatives


def _hessian_draws(out: Tensor, params: list[Tensor], replicas: int) -> Tensor:
    """``(R, P, P)``: per-replica Hessians of the summed surrogate (block-diagonal over
    replicas, so one backward per parameter column gives every replica's column)."""
    grads = _draws(_flat_grads(out, params, create_graph=True), replicas)  # (R, P)
    rows = []
    for j in range(grads.shape[1]):
        row = torch.autograd.grad(
            grads[:, j].sum(), params, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        rows.append(_draws(list(row), replicas))
    return torch.stack(rows, 1)


def _exact_hessian(exact: Callable[..., Tensor], values: list[Tensor]) -> Tensor:
    sizes = [v.numel() for v in values]

    def flat(z: Tensor) -> Tensor:
        parts = torch.split(z, sizes)
        return exact(*(p.reshape(v.shape) for p, v in zip(parts, values)))

    return torch.autograd.functional.hessian(flat, torch.cat([v.reshape(-1) for v in values]))


def _upper(h: Tensor) -> Tensor:
    """The upper triangle (the Hessian is symmetric): ``(..., P(P+1)/2)``."""
    i, j = torch.triu_indices(h.shape[-1], h.shape[-1])
    return h[..., i, j]


def normal_exact(mu: Tensor, sigma: Tensor) -> Tensor:
    """E[x³ - 2x²] for x ~ N(μ, σ²): μ³ + 3μσ² - 2(μ² + σ²)."""
    return mu**3 + 3 * mu * sigma**2 - 2 * (mu**2 + sigma**2)


def test_hessian_is_unbiased_for_normal_with_a_cubic() -> None:
    """f = x³ - 2x², θ = (μ, σ) = (0.5, 0.8): 3 Hessian entries, failure rate 1e-3."""
    torch.manual_seed(1)
    replicas = 200_000
    mu = t(0.5).expand(replicas).clone().requires_grad_()
    sigma = t(0.8).expand(replicas).clone().requires_grad_()
    dist = Normal(mu, sigma)
    x = dist.sample()
    out = dice_surrogate([x**3 - 2 * x**2], [dist.log_prob(x)], [[0]])
    h = _hessian_draws(out, [mu, sigma], replicas)
    exact = _exact_hessian(normal_exact, [t(0.5), t(0.8)])
    assert_mean(_upper(h), _upper(exact), alpha=1e-3, what="Normal Hessian")


W = t(1.0, -2.0, 0.5)


def bernoulli_cost(b: Tensor) -> Tensor:
    """(w·b - 0.3)² + 2 b0 b1 b2, a polynomial in the three bits."""
    return (b @ W - 0.3) ** 2 + 2 * b[..., 0] * b[..., 1] * b[..., 2]


def bernoulli_exact(theta: Tensor) -> Tensor:
    r"""Closed form: Σ w_i² p_i + 2Σ_{i<j} w_i w_j p_i p_j - 0.6 Σ w_i p_i + 0.09 + 2 p0 p1 p2."""
    p = torch.sigmoid(theta)
    wp = W * p
    pairs = (wp.sum() ** 2 - (wp**2).sum()) / 2
    return (W**2 * p).sum() + 2 * pairs - 0.6 * wp.sum() + 0.09 + 2 * p.prod()


def test_bernoulli_closed_form_matches_enumeration() -> None:
    """The closed form and its Hessian equal brute-force enumeration over the 8 outcomes."""
    theta = t(0.3, -0.7, 1.1)
    h_closed = _exact_hessian(bernoulli_exact, [theta])
    h_enum = _exact_hessian(
        lambda th: lt.enumerate_expectation(bernoulli_cost, _independent(th)), [theta]
    )
    torch.testing.assert_close(h_closed, h_enum)
    torch.testing.assert_close(
        bernoulli_exact(theta), lt.enumerate_expectation(bernoulli_cost, _independent(theta))
    )


def _independent(theta: Tensor) -> torch.distributions.Distribution:
    return torch.distributions.Independent(Bernoulli(logits=theta), 1)


@pytest.mark.parametrize("baseline", [None, 0.9], ids=["plain", "constant_baseline"])
def test_hessian_is_unbiased_for_bernoulli_with_a_polynomial(baseline: float | None) -> None:
    """Three bits, f = (w·b - 0.3)² + 2 b0 b1 b2: 6 Hessian entries, failure rate 1e-3."""
    torch.manual_seed(2)
    replicas = 100_000
    theta0 = t(0.3, -0.7, 1.1)
    theta = theta0.expand(replicas, 3).clone().requires_grad_()
    dist = Bernoulli(logits=theta)
    b = dist.sample()
    out = dice_surrogate(
        [bernoulli_cost(b)],
        [dist.log_prob(b).sum(-1)],
        [[0]],
        None if baseline is None else [baseline],
    )
    h = _hessian_draws(out, [theta], replicas)
    exact = _exact_hessian(bernoulli_exact, [theta0])
    assert_mean(_upper(h), _upper(exact), alpha=1e-3, what="Bernoulli Hessian")


def _two_stage_hessian_draws(replicas: int, baselines: object, union: bool = True) -> Tensor:
    out, params = two_stage_surrogate(replicas, 1, RB, baselines)
    if not union:  # the wrong construction: one box per node instead of the box of the union
        th1, th2 = params
        d1 = Categorical(logits=th1)
        x1 = d1.sample()
        d2 = Categorical(logits=th2[torch.arange(replicas), x1])
        x2 = d2.sample()
        lp1, lp2 = d1.log_prob(x1), d2.log_prob(x2)
        c1, c2 = A[x1], G[x1, x2]
        out = c1 * lt.magic_box(lp1) + c2 * (lt.magic_box(lp1) + lt.magic_box(lp2) - 1.0)
    return _upper(_hessian_draws(out, params, replicas))


@pytest.mark.slow
def test_two_stage_hessian_is_unbiased_and_one_box_per_node_is_not() -> None:
    """The 12 × 12 Hessian of the two-stage model (78 distinct entries), plain and with
    constant baselines per node: 156 checks at family-wise failure rate 1e-3. The construction
    with one magic box per node (right first derivative, missing cross terms
    c2·∇log p1·∇log p2ᵀ) must be rejected: its largest |z| over the entries exceeds the same
    threshold (a power check; at these sizes its cross terms are off by many SE)."""
    torch.manual_seed(3)
    replicas = 40_000
    exact = _upper(_exact_hessian(two_stage_exact, [THETA1, THETA2]))
    draws = torch.stack(
        [_two_stage_hessian_draws(replicas, None), _two_stage_hessian_draws(replicas, [10.0, 1.0])],
        1,
    )
    assert_mean(draws, exact.expand(2, -1), alpha=1e-3, what="two-stage Hessian")
    wrong = _two_stage_hessian_draws(replicas, None, union=False)
    # inf where a cross term is identically zero; nan (0/0) where both are zero
    z = z_scores(wrong, exact).nan_to_num(nan=0.0, posinf=float("inf")).max()
    print(f"\none box per node: largest |z| = {float(z):.3g}")
    assert z > z_bonferroni(1e-3, 2 * exact.numel()), float(z)


@pytest.mark.parametrize("baseline", ["leave_one_out", 0.8, "learned", "optimal_scale"])
def test_one_node_equals_the_surrogate(baseline: str | float) -> None:
    """(a) One node, one cost: dice_surrogate's baseline term is the one baseline path of
    lt.surrogate, the same value and gradients (θ and a learned baseline's network)."""
    torch.manual_seed(9)
    x = torch.randn(6, dtype=DT)
    ctx = torch.randn(6, 2, dtype=DT)
    net = torch.nn.Linear(2, 1).to(DT)
    grads = []
    for use_dice in (True, False):
        mu = t(0.3).requires_grad_()
        spec = {"learned": lt.Learned(net), "optimal_scale": lt.OptimalScale([mu])}.get(
            baseline, baseline
        )
        lp, cost = Normal(mu, 1.0).log_prob(x), x**2 + 1.0
        if use_dice:
            out = dice_surrogate([cost], [lp], [[0]], [spec], context=ctx)
        else:
            out = lt.surrogate(cost, lp, spec, context=ctx)
        assert torch.equal(out.detach(), cost)
        grads.append(torch.autograd.grad(out.sum(), [mu, *net.parameters()], allow_unused=True))
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
