"""Relaxation-based estimators: GumbelSoftmax and StraightThrough (biased: the bias is measured),
Rebar and Relax (unbiased: checked against enumeration), and the variance-minimising update."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal, OneHotCategorical

import logtrick as lt
from logtrick.baselines import OptimalScale
from logtrick.enumeration import enumerate_expectation
from logtrick.estimators import expectation
from logtrick.gumbel import GumbelSoftmax, StraightThrough, perturbed_logits
from logtrick.rebar import ControlVariateNet, Rebar, Relax, variance_backward

DT = torch.float64
THETA = torch.tensor([-1.0, 0.3, 1.5], dtype=DT)
TARGET = torch.tensor([0.2, 0.7, 0.45], dtype=DT)
LOGITS = torch.tensor([[0.5, -1.0, 0.2, 1.0], [0.0, 0.0, 2.0, -1.0]], dtype=DT)
VALUES = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
# action masking: one category masked with -inf, one with a very negative finite logit
MASKED = torch.tensor([[0.5, -math.inf, 0.2, 1.0], [0.0, -1e4, 2.0, -1.0]], dtype=DT)
MASK = MASKED < -100.0


def z_crit(failure_rate: float, checks: int) -> float:
    """Two-sided normal quantile at ``failure_rate`` split over ``checks`` (Bonferroni)."""
    return float(torch.special.ndtri(torch.tensor(1.0 - failure_rate / (2 * checks), dtype=DT)))


def quadratic(b: torch.Tensor) -> torch.Tensor:
    """Bernoulli test function: not affine in b (b0 * b1), differentiable on relaxed b."""
    return ((b - TARGET) ** 2).sum(-1) + 2.0 * b[..., 0] * b[..., 1]


def categorical_f(y: torch.Tensor) -> torch.Tensor:
    """One-hot test function over two categorical components, ``(..., 2, 4) -> (...)``."""
    return ((y @ VALUES) ** 2).sum(-1) + 3.0 * (y[..., 0, :] * y[..., 1, :]).sum(-1)


def make_net(inputs: int, seed: int, flatten: bool = False) -> nn.Module:
    """A small random network ``(..., inputs) -> (..., 1)``; ``flatten`` merges the last two
    dimensions first (categorical logits ``(..., 2, 4)``)."""
    torch.manual_seed(seed)
    first = nn.Flatten(-2) if flatten else nn.Identity()
    return nn.Sequential(first, nn.Linear(inputs, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)


def replicate_grads(est, f, make_dist, theta0, reps, k, baseline=None) -> torch.Tensor:
    """``(reps,) + theta0.shape``: independent draws of the K-sample gradient estimate."""
    theta = theta0.expand(reps, *theta0.shape).clone().requires_grad_(True)
    est.terms(f, make_dist(theta), k, baseline, None).mean(0).sum().backward()
    return theta.grad


def exact_grad(f, make_dist, theta0) -> torch.Tensor:
    theta = theta0.clone().requires_grad_(True)
    enumerate_expectation(f, make_dist(theta)).backward()
    return theta.grad


def z_scores(grads: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return (grads.mean(0) - truth) / (grads.std(0) / grads.shape[0] ** 0.5)


def bernoulli(theta: torch.Tensor) -> Bernoulli:
    return Bernoulli(logits=theta)


# a fresh estimator of each relaxation-based kind, by short name
MAKE_RELAXED = {
    "rebar": Rebar,
    "relax": Relax,
    "gumbel_softmax": lambda: GumbelSoftmax(0.5),
    "gumbel_softmax_hard": lambda: GumbelSoftmax(0.5, hard=True),
    "straight_through": StraightThrough,
}


# ---------------------------------------------------------------- GumbelSoftmax (biased)
QUAD_U = (torch.arange(200_000, dtype=DT) + 0.5) / 200_000
QUAD_NOISE = QUAD_U.log() - (-QUAD_U).log1p()  # logistic quantiles: midpoint quadrature nodes


def relaxed_objective_grad(tau: float) -> torch.Tensor:
    """Gradient of E_z[quadratic(sigmoid(z / tau))] by quadrature (the terms are 1-D integrals)."""
    theta = THETA.clone().requires_grad_(True)
    y = torch.sigmoid((theta[:, None] + QUAD_NOISE) / tau)  # (3, M)
    value = ((y - TARGET[:, None]) ** 2).mean(1).sum() + 2.0 * y[0].mean() * y[1].mean()
    (grad,) = torch.autograd.grad(value, theta)
    return grad


# 2 temperatures x 3 components, total failure rate 1e-3
@pytest.mark.parametrize("tau", [1.0, 0.25])
def test_gumbel_softmax_is_unbiased_for_the_relaxed_objective_and_biased_for_f(tau: float) -> None:
    torch.manual_seed(0)
    grads = replicate_grads(GumbelSoftmax(tau), quadratic, bernoulli, THETA, 40000, 1)
    assert (z_scores(grads, relaxed_objective_grad(tau)).abs() <= z_crit(1e-3, 6)).all()
    # biased for E[f(b)]: under "no bias" P(any |z| > z_crit(1e-3, 3)) <= 1e-3
    z = z_scores(grads, exact_grad(quadratic, bernoulli, THETA))
    print(f"GumbelSoftmax(tau={tau}): z-scores of the mean against the exact gradient {z.tolist()}")
    assert z.abs().max() > z_crit(1e-3, 3)


def test_gumbel_softmax_bias_vanishes_as_temperature_goes_to_zero() -> None:
    truth = exact_grad(quadratic, bernoulli, THETA)
    taus = [2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01]
    bias = [float((relaxed_objective_grad(t) - truth).norm()) for t in taus]
    table = {t: f"{b:.2e}" for t, b in zip(taus, bias)}
    print(f"GumbelSoftmax bias |grad E[f(relaxed)] - grad E[f(b)]| by temperature: {table}")
    assert all(a > b for a, b in itertools.pairwise(bias))
    assert bias[-1] < 0.02 * bias[1]  # O(tau): from tau = 1 to 0.01 it falls ~100-fold


@pytest.mark.parametrize("cls", [OneHotCategorical, Categorical])
def test_gumbel_softmax_categorical_bias_is_measured(cls: type) -> None:
    def make(theta: torch.Tensor):
        return cls(logits=theta)

    def f_exact(x: torch.Tensor) -> torch.Tensor:  # enumeration passes indices for Categorical
        return categorical_f(x if cls is OneHotCategorical else nn.functional.one_hot(x, 4).to(DT))

    torch.manual_seed(1)
    grads = replicate_grads(GumbelSoftmax(1.0), categorical_f, make, LOGITS, 20000, 1)
    z = z_scores(grads, exact_grad(f_exact, make, LOGITS))
    assert z.abs().max() > z_crit(1e-3, 8)


def test_hard_gumbel_softmax_and_straight_through_values_are_f_at_discrete_samples() -> None:
    theta = THETA.clone().requires_grad_(True)
    count = lambda b: b.sum(-1)  # noqa: E731  integer-valued at 0/1 samples
    for est in (GumbelSoftmax(0.5, hard=True), StraightThrough()):
        values = est.terms(count, Bernoulli(logits=theta), 64, None, None).detach()
        assert torch.equal(values, values.round()) and (values >= 0).all()
    soft = GumbelSoftmax(0.5).terms(count, Bernoulli(logits=theta), 64, None, None).detach()
    assert not torch.equal(soft, soft.round())  # relaxed samples are not 0/1
    y = GumbelSoftmax(0.5, hard=True).terms(
        lambda v: v.max(-1).values.sum(-1), OneHotCategorical(logits=LOGITS), 16, None, None
    )
    assert torch.equal(y.detach(), torch.full((16,), 2.0, dtype=DT))  # one-hot: max 1 each


# ---------------------------------------------------------------- StraightThrough (biased)
def test_straight_through_one_sample_matches_hand_formula() -> None:
    torch.manual_seed(3)
    theta = THETA.clone().requires_grad_(True)
    terms = StraightThrough().terms(quadratic, Bernoulli(logits=theta), 5, None, None)
    terms.mean().backward()
    torch.manual_seed(3)
    b = Bernoulli(logits=THETA).sample((5,))
    p = torch.sigmoid(THETA)
    df = 2.0 * (b - TARGET) + 2.0 * torch.stack([b[:, 1], b[:, 0], 0 * b[:, 0]], -1)
    torch.testing.assert_close(terms.detach(), quadratic(b))
    torch.testing.assert_close(theta.grad, (df * p * (1 - p)).mean(0))


def test_straight_through_bias_is_measured() -> None:
    torch.manual_seed(4)
    grads = replicate_grads(StraightThrough(), quadratic, bernoulli, THETA, 40000, 1)
    p = torch.sigmoid(THETA)
    mean_df = 2.0 * (p - TARGET) + 2.0 * torch.stack([p[1], p[0], 0 * p[0]])
    # 3 checks of agreement with its own expectation, total failure rate 1e-3
    assert (z_scores(grads, mean_df * p * (1 - p)).abs() <= z_crit(1e-3, 3)).all()
    z = z_scores(grads, exact_grad(quadratic, bernoulli, THETA))
    assert z.abs().max() > z_crit(1e-3, 3)  # biased: f is not affine in b
    # ... and unbiased for a multilinear f (affine in each component): 3 more checks
    multilinear = lambda b: b[..., 0] * b[..., 1] - 2.0 * b[..., 1] * b[..., 2] + b[..., 0]  # noqa: E731
    torch.manual_seed(8)
    grads = replicate_grads(StraightThrough(), multilinear, bernoulli, THETA, 20000, 1)
    truth = exact_grad(multilinear, bernoulli, THETA)
    assert (z_scores(grads, truth).abs() <= z_crit(1e-3, 3)).all()
    torch.manual_seed(5)
    make = lambda t: OneHotCategorical(logits=t)  # noqa: E731
    grads = replicate_grads(StraightThrough(), categorical_f, make, LOGITS, 20000, 1)
    assert z_scores(grads, exact_grad(categorical_f, make, LOGITS)).abs().max() > z_crit(1e-3, 8)


# ---------------------------------------------------------------- Rebar / Relax (unbiased)
def _bernoulli_cases() -> list:
    net = make_net(3, seed=11)
    smooth_net = lambda b: net(b).squeeze(-1)  # noqa: E731  (differentiable: REBAR needs it)
    black_box = lambda b: net(b).squeeze(-1).detach()  # noqa: E731
    return [
        ("rebar-quadratic", lambda: Rebar(), quadratic, 1, None),
        ("rebar(0.3,0.7)-net", lambda: Rebar(0.3, 0.7).to(DT), smooth_net, 1, None),
        ("relax-quadratic", lambda: Relax(make_net(3, 12)), quadratic, 1, None),
        ("relax-blackbox-loo", lambda: Relax(make_net(3, 13)), black_box, 2, "leave_one_out"),
    ]


# 4 cases x 3 components = 12 checks, total failure rate 1e-3
@pytest.mark.parametrize("case", range(4))
def test_rebar_relax_bernoulli_unbiased_against_enumeration(case: int) -> None:
    name, make_est, f, k, baseline = _bernoulli_cases()[case]
    truth = exact_grad(f, bernoulli, THETA)
    torch.manual_seed(20 + case)
    grads = replicate_grads(make_est(), f, bernoulli, THETA, 20000, k, baseline)
    z = z_scores(grads, truth)
    assert (z.abs() <= z_crit(1e-3, 12)).all(), (name, z)


# 2 estimators x 2 distributions x 8 logits = 32 checks, total failure rate 1e-3
@pytest.mark.parametrize("cls", [OneHotCategorical, Categorical])
@pytest.mark.parametrize("which", ["rebar", "relax"])
def test_rebar_relax_categorical_unbiased_against_enumeration(cls: type, which: str) -> None:
    def make(theta: torch.Tensor):
        return cls(logits=theta)

    def f_exact(x: torch.Tensor) -> torch.Tensor:
        return categorical_f(x if cls is OneHotCategorical else nn.functional.one_hot(x, 4).to(DT))

    est = Rebar() if which == "rebar" else Relax(make_net(8, seed=14, flatten=True))
    torch.manual_seed(30)
    grads = replicate_grads(est, categorical_f, make, LOGITS, 20000, 1)
    z = z_scores(grads, exact_grad(f_exact, make, LOGITS))
    assert (z.abs() <= z_crit(1e-3, 32)).all(), z


def test_rebar_relax_value_is_f_at_discrete_samples() -> None:
    theta = THETA.clone().requires_grad_(True)
    for est in (Rebar(), Relax(make_net(3, 15))):
        values = est.terms(lambda b: b.sum(-1), Bernoulli(logits=theta), 32, None, None)
        assert torch.equal(values.detach(), values.detach().round())


@pytest.mark.parametrize("which", ["gumbel_softmax", "straight_through", "rebar", "relax"])
def test_through_expectation(which: str) -> None:
    """lt.expectation with these estimators is the mean of their terms: the same value and
    gradient from the same draws; the value is f's mean at the discrete samples (Gumbel-softmax:
    at the relaxed ones); and for REBAR/RELAX the gradient's mean over 4000 replicas equals the
    exact one (failure rate 1e-3, Bonferroni over the 3 components)."""
    make = {
        "gumbel_softmax": GumbelSoftmax,
        "straight_through": StraightThrough,
        "rebar": lambda: Rebar().to(DT),
        "relax": lambda: Relax(make_net(3, 18)),
    }[which]
    theta = THETA.clone().requires_grad_(True)
    grads, values = [], []
    for through in (True, False):
        est, seen = make(), []

        def f(b: torch.Tensor) -> torch.Tensor:
            seen.append(b.detach())  # noqa: B023
            return quadratic(b)

        torch.manual_seed(5)
        dist = Bernoulli(logits=theta)
        value = (
            expectation(f, dist, 4, est) if through else est.terms(f, dist, 4, None, None).mean(0)
        )
        grads.append(torch.autograd.grad(value, theta)[0])
        values.append(value.detach())
        if which != "gumbel_softmax":
            assert torch.equal(seen[0], seen[0].round())  # f first met the discrete samples
        torch.testing.assert_close(value.detach(), quadratic(seen[0]).mean())
    assert torch.equal(values[0], values[1])
    torch.testing.assert_close(grads[0], grads[1])
    if which in ("rebar", "relax"):
        torch.manual_seed(6)
        reps = theta.detach().expand(4000, 3).clone().requires_grad_(True)
        expectation(quadratic, Bernoulli(logits=reps), 1, make()).sum().backward()
        z = z_scores(reps.grad, exact_grad(quadratic, bernoulli, THETA))
        assert (z.abs() <= z_crit(1e-3, 3)).all(), z


@pytest.mark.parametrize("name", sorted(MAKE_RELAXED))
def test_through_expectation_equals_the_mean_of_the_terms(name: str) -> None:
    """``expectation(..., estimator=name)`` (where a short name exists) and ``estimator=object``
    give exactly the value and gradient of ``object.terms(...).mean(0)`` on the same draws."""
    results = []
    for how in ("terms", "object", "name") if name in lt.ESTIMATORS else ("terms", "object"):
        theta = THETA.clone().requires_grad_(True)
        torch.manual_seed(9)
        est = MAKE_RELAXED[name]().to(DT) if name in ("rebar", "relax") else MAKE_RELAXED[name]()
        dist = Bernoulli(logits=theta)
        if how == "terms":
            value = est.terms(quadratic, dist, 4, None, None).mean(0)
        else:
            spec = est if how == "object" else name
            value = expectation(quadratic, dist, 4, estimator=spec)
        (grad,) = torch.autograd.grad(value, theta)
        results.append((value.detach(), grad))
    assert results[0][1].abs().sum() > 0
    for value, grad in results[1:]:
        torch.testing.assert_close(value, results[0][0])
        torch.testing.assert_close(grad, results[0][1])


def test_variance_backward_wiring() -> None:
    torch.manual_seed(6)
    est = Relax(make_net(3, 16))
    theta = THETA.clone().requires_grad_(True)
    loss = est.terms(quadratic, Bernoulli(logits=theta), 4, None, None).mean()
    (g,) = torch.autograd.grad(loss, theta, create_graph=True, retain_graph=True)
    phi = list(est.parameters())
    expected = torch.autograd.grad(g.pow(2).sum(), phi, retain_graph=True)
    sq = variance_backward(loss, [theta], phi)
    torch.testing.assert_close(theta.grad, g.detach())
    torch.testing.assert_close(sq, g.pow(2).sum().detach())
    for p, e in zip(phi, expected):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["rebar", "relax", "relax_default"])
def test_training_the_control_variate_lowers_the_variance(which: str) -> None:
    torch.manual_seed(7)
    f = lambda b: ((b - 0.45) ** 2).sum(-1)  # noqa: E731
    theta0 = torch.zeros(5, dtype=DT)
    make = {"rebar": Rebar, "relax": lambda: Relax(make_net(5, 17)), "relax_default": Relax}
    est = make[which]().to(DT)
    est.terms(f, bernoulli(theta0), 1, None, None)  # builds the default network (see Relax)

    def variance() -> float:
        return float(replicate_grads(est, f, bernoulli, theta0, 20000, 1).var(0).sum())

    before = variance()
    opt = torch.optim.Adam(est.parameters(), lr=1e-2)
    for _ in range(200):
        theta = theta0.clone().requires_grad_(True)
        loss = est.terms(f, Bernoulli(logits=theta), 16, None, None).mean()
        opt.zero_grad()
        est.backward(loss, [theta])
        opt.step()
    after = variance()
    print(f"{which}: gradient variance before {before:.4f}, after training {after:.4f}")
    # the relative standard error of a variance from 20000 draws is ~1-2%; the drop is > 2x
    assert after < 0.5 * before


def test_errors() -> None:
    with pytest.raises(ValueError, match="temperature"):
        GumbelSoftmax(0.0)
    with pytest.raises(ValueError, match="temperature"):
        Rebar(-1.0)
    with pytest.raises(TypeError, match="needs a Bernoulli, Categorical"):
        GumbelSoftmax().terms(lambda x: x, Normal(0.0, 1.0), 2, None, None)
    with pytest.raises(TypeError, match="needs a Bernoulli, Categorical"):
        StraightThrough().terms(lambda x: x, Normal(0.0, 1.0), 2, None, None)
    theta = THETA.clone().requires_grad_(True)
    bad = Relax(nn.Linear(3, 2).to(DT))
    with pytest.raises(ValueError, match="control_variate: Relax's c\\(z\\) has shape"):
        bad.terms(quadratic, Bernoulli(logits=theta), 4, None, None)
    with pytest.raises(ValueError, match="hidden"):
        Relax(hidden=0)
    with pytest.raises(ValueError, match="scale"):
        Rebar(scale=float("inf"))
    with pytest.raises(TypeError, match="OptimalScale"):
        Rebar().terms(quadratic, Bernoulli(logits=theta), 4, OptimalScale([theta]), None)


# ---------------------------------------------------------------- masked categories (-inf logits)
def _masked_truth(cls: type) -> torch.Tensor:
    def f_exact(x: torch.Tensor) -> torch.Tensor:
        return categorical_f(x if cls is OneHotCategorical else nn.functional.one_hot(x, 4).to(DT))

    return exact_grad(f_exact, lambda t: cls(logits=t), MASKED)


# 2 estimators x 2 distributions x 6 unmasked logits = 24 checks, total failure rate 1e-3
@pytest.mark.parametrize("cls", [OneHotCategorical, Categorical])
@pytest.mark.parametrize("which", ["rebar", "relax"])
def test_rebar_relax_masked_categorical_unbiased_and_finite(cls: type, which: str) -> None:
    """Logits -inf and -1e4 (the conditional draw used to overflow exp(-theta) into NaN): the
    masked categories get gradient exactly 0, the others stay unbiased, and the control
    variate's own parameters (temperature, network) get finite gradients."""
    truth = _masked_truth(cls)
    assert truth.isfinite().all() and (truth[MASK] == 0).all()
    est = Rebar() if which == "rebar" else Relax(make_net(8, seed=14, flatten=True))
    torch.manual_seed(31)
    grads = replicate_grads(est, categorical_f, lambda t: cls(logits=t), MASKED, 20000, 1)
    assert grads.isfinite().all()
    assert (grads[:, MASK] == 0).all()
    z = z_scores(grads[:, ~MASK], truth[~MASK])
    assert (z.abs() <= z_crit(1e-3, 24)).all(), z
    assert all(p.grad is not None and p.grad.isfinite().all() for p in est.parameters())


@pytest.mark.parametrize("which", ["rebar", "relax"])
def test_variance_backward_with_masked_categories_is_finite(which: str) -> None:
    """``est.backward`` differentiates the estimate once more (create_graph): with -inf and -1e4
    logits every gradient, of θ and of the control variate, stays finite; masked ones are 0."""
    torch.manual_seed(33)
    est = Rebar() if which == "rebar" else Relax(make_net(8, seed=19, flatten=True))
    theta = MASKED.clone().requires_grad_(True)
    loss = expectation(categorical_f, OneHotCategorical(logits=theta), 16, estimator=est)
    assert est.backward(loss, [theta]).isfinite()
    assert theta.grad.isfinite().all() and (theta.grad[MASK] == 0).all()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in est.parameters())


@pytest.mark.parametrize("name", sorted(MAKE_RELAXED))
def test_masked_category_is_never_chosen_and_gets_zero_gradient(name: str) -> None:
    """Every input f sees (discrete or relaxed) puts weight exactly 0 on a masked category, and
    the gradient is finite with 0 at the masked logits."""
    est, seen = MAKE_RELAXED[name](), []

    def f(y: torch.Tensor) -> torch.Tensor:
        seen.append(y.detach())
        return categorical_f(y)

    theta = MASKED.clone().requires_grad_(True)
    torch.manual_seed(32)
    est.terms(f, OneHotCategorical(logits=theta), 4000, None, None).mean().backward()
    assert seen and all((y[..., MASK] == 0).all() for y in seen)
    assert theta.grad.isfinite().all() and (theta.grad[MASK] == 0).all()
    z = perturbed_logits(OneHotCategorical(logits=MASKED), 5)
    assert (z[:, 0, 1] == -math.inf).all() and z[:, 1, 1].isfinite().all()


# ---------------------------------------------------------------- Relax's default network
def test_relax_by_name_is_unbiased() -> None:
    """``estimator="relax"`` builds ``Relax()`` with its default network (untrained: the output
    layer is zero). 3 checks at a total failure rate of 1e-3."""
    truth = exact_grad(quadratic, bernoulli, THETA)
    torch.manual_seed(40)
    theta = THETA.expand(20000, 3).clone().requires_grad_(True)
    value = expectation(quadratic, Bernoulli(logits=theta), samples=8, estimator="relax")
    assert value.shape == (20000,)
    value.sum().backward()
    assert (z_scores(theta.grad, truth).abs() <= z_crit(1e-3, 3)).all()


def test_relax_default_network_is_built_on_first_call_trained_and_unbiased() -> None:
    """The network exists from the first ``terms`` call (built for the 3 logits that f reduces),
    ``backward`` puts the variance gradient into it, an optimiser made after that first call
    trains it, and the trained (non-zero) control variate is unbiased: 3 checks, rate 1e-3."""
    torch.manual_seed(41)
    est = Relax(hidden=8)
    assert list(est.parameters()) == []
    theta = THETA.clone().requires_grad_(True)
    loss = expectation(quadratic, Bernoulli(logits=theta), samples=8, estimator=est)
    shapes = [tuple(p.shape) for p in est.parameters()]
    assert isinstance(est.control_variate, ControlVariateNet) and shapes == [
        (8, 3),
        (8,),
        (1, 8),
        (1,),
    ]
    est.backward(loss, [theta])
    assert float(est.control_variate.out.weight.grad.abs().sum()) > 0
    opt = torch.optim.Adam(est.parameters(), lr=0.05)
    for _ in range(30):
        theta = THETA.clone().requires_grad_(True)
        opt.zero_grad()
        est.backward(expectation(quadratic, Bernoulli(logits=theta), 8, estimator=est), [theta])
        opt.step()
    assert float(est.control_variate.out.weight.detach().abs().min()) > 0
    truth = exact_grad(quadratic, bernoulli, THETA)
    grads = replicate_grads(est, quadratic, bernoulli, THETA, 20000, 1)
    assert (z_scores(grads, truth).abs() <= z_crit(1e-3, 3)).all()


def test_relax_num_inputs_builds_at_once_and_checks_the_size() -> None:
    est = Relax(num_inputs=3).to(DT)
    assert len(list(est.parameters())) == 4
    theta = torch.zeros(2, 4, dtype=DT, requires_grad=True)  # 4 logits per joint sample
    with pytest.raises(ValueError, match="network takes 3 logits per joint sample"):
        est.terms(lambda b: b.sum(-1), Bernoulli(logits=theta), 2, None, None)
    # f keeping every batch dimension: one logit per joint sample
    elementwise = Relax().terms(lambda b: b, Bernoulli(logits=theta), 2, None, None)
    assert elementwise.shape == (2, 2, 4)
