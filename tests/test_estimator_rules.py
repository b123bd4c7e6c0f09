"""Issue 23: the rules the estimator docstrings state, enforced by the code.

Defects: ``auto`` chose the pathwise path by ``has_rsample`` alone (biased on straight-through
samplers); a shared node with a leave-one-out baseline got a zero gradient; bool-valued f crashed
ARM, DisARM, RELAX and measure-valued. Bad input that was silently wrong or a raw traceback now
fails at the boundary with an error naming the argument. Statistical checks: two-sided z from a
stated failure rate, Bonferroni over the entries (tests/stats.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
import torch.distributions as D
from torch import Tensor

import logtrick as lt
from stats import z_bonferroni

DT = torch.float64
N = 20_000  # replicas per distribution

# ------------------------------------------------------------------ auto chooses by the sampler


def t(*v: float) -> Tensor:
    return torch.tensor(v, dtype=DT)


def sig(x: Tensor) -> Tensor:
    return torch.sigmoid(x)


def decay(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x)


def event_sum(g: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda x: g(x).sum(-1)


V = t(1.0, -2.0, 0.5)
TEMP = torch.tensor(0.5, dtype=DT)
TRIL = torch.tensor([[1.0, 0.0], [0.3, 0.8]], dtype=DT)
COV = TRIL @ TRIL.T

# name -> (params, dist(params) with a leading replica dimension, f, reparameterised?)
RSAMPLE: dict[str, tuple[list[Tensor], Callable[..., D.Distribution], Callable, bool]] = {
    "Beta": ([t(2.0), t(3.0)], lambda a, b: D.Beta(a, b), lambda x: x**2, True),
    "Cauchy": ([t(0.3), t(1.2)], lambda m, s: D.Cauchy(m, s), sig, True),
    "Chi2": ([t(3.0)], lambda d: D.Chi2(d), decay, True),
    "ContinuousBernoulli": (
        [t(0.4)],
        lambda z: D.ContinuousBernoulli(logits=z),
        lambda x: x**2,
        True,
    ),
    "Dirichlet": ([t(1.5, 2.0, 2.5)], lambda c: D.Dirichlet(c), event_sum(lambda x: x**2), True),
    "Exponential": ([t(1.5)], lambda r: D.Exponential(r), decay, True),
    "FisherSnedecor": ([t(5.0), t(7.0)], lambda a, b: D.FisherSnedecor(a, b), decay, True),
    "Gamma": ([t(2.0), t(1.5)], lambda c, r: D.Gamma(c, r), decay, True),
    "GeneralizedPareto": (  # float32: torch's float64 log_prob backward mixes dtypes
        [t(1.0).float()],
        lambda s: D.GeneralizedPareto(torch.zeros_like(s), s, torch.full_like(s, 0.2)),
        decay,
        True,
    ),
    "Gumbel": ([t(0.3), t(1.2)], lambda m, s: D.Gumbel(m, s), sig, True),
    "HalfCauchy": ([t(1.2)], lambda s: D.HalfCauchy(s), decay, True),
    "HalfNormal": ([t(1.2)], lambda s: D.HalfNormal(s), decay, True),
    "InverseGamma": ([t(3.0), t(2.0)], lambda c, r: D.InverseGamma(c, r), decay, True),
    "Kumaraswamy": ([t(2.0), t(3.0)], lambda a, b: D.Kumaraswamy(a, b), lambda x: x**2, True),
    "Laplace": ([t(0.3), t(1.2)], lambda m, s: D.Laplace(m, s), sig, True),
    "LogNormal": ([t(0.1), t(0.5)], lambda m, s: D.LogNormal(m, s), decay, True),
    "LogisticNormal": (
        [t(0.2, -0.4), t(0.8, 1.1)],
        lambda m, s: D.LogisticNormal(m, s),
        event_sum(lambda x: x**2),
        True,
    ),
    "LowRankMultivariateNormal": (
        [t(0.2, -0.4), t(0.5, 0.7)],
        lambda m, d: D.LowRankMultivariateNormal(m, torch.ones(*m.shape, 1, dtype=DT) * 0.3, d),
        event_sum(sig),
        True,
    ),
    "MultivariateNormal": (
        [t(0.2, -0.4)],
        lambda m: D.MultivariateNormal(m, scale_tril=TRIL),
        event_sum(sig),
        True,
    ),
    "Normal": ([t(0.3), t(1.2)], lambda m, s: D.Normal(m, s), sig, True),
    "OneHotCategoricalStraightThrough": (
        [t(0.5, -0.3, 0.1)],
        lambda z: D.OneHotCategoricalStraightThrough(logits=z),
        lambda x: (x @ V) ** 2,
        False,
    ),
    "Pareto": ([t(3.0)], lambda a: D.Pareto(torch.ones_like(a), a), decay, True),
    "RelaxedBernoulli": (
        [t(0.4)],
        lambda z: D.RelaxedBernoulli(TEMP, logits=z),
        lambda x: x**2,
        False,
    ),
    "RelaxedOneHotCategorical": (
        [t(0.5, -0.3, 0.1)],
        lambda z: D.RelaxedOneHotCategorical(TEMP, logits=z),
        lambda x: (x @ V) ** 2,
        False,
    ),
    "StudentT": ([t(4.0), t(0.3)], lambda d, m: D.StudentT(d, m, 1.0), sig, True),
    "Uniform": ([t(0.3), t(1.2)], lambda lo, hi: D.Uniform(lo, hi), lambda x: x**2, True),
    "TransformedDistribution": (
        [t(0.3), t(1.2)],
        lambda m, s: D.TransformedDistribution(D.Normal(m, s), D.ExpTransform()),
        decay,
        True,
    ),
    "Weibull": ([t(1.5), t(2.0)], lambda s, c: D.Weibull(s, c), decay, True),
    "Wishart": (
        [t(4.0)],
        lambda d: D.Wishart(d, covariance_matrix=COV),
        lambda x: torch.tanh(x.diagonal(dim1=-2, dim2=-1).sum(-1) / 8),
        True,
    ),
    "Independent": (
        [t(0.3, -0.2)],
        lambda m: D.Independent(D.Normal(m, 1.0), 1),
        event_sum(sig),
        True,
    ),
}


def test_every_torch_distribution_with_rsample_is_covered() -> None:
    """The table above lists every torch distribution class whose has_rsample can be True."""
    names = set()
    for name in D.__all__:
        cls = getattr(D, name)
        if (
            inspect.isclass(cls)
            and issubclass(cls, D.Distribution)
            and cls.has_rsample is not False
        ):
            names.add(name)
    assert names <= set(RSAMPLE), names - set(RSAMPLE)


@pytest.mark.parametrize("name", list(RSAMPLE))
def test_auto_chooses_pathwise_only_for_a_true_reparameterisation(name: str) -> None:
    from logtrick.pathwise import reparameterised

    params, make, _, expected = RSAMPLE[name]
    dist = make(*[p.clone().requires_grad_() for p in params])
    assert dist.has_rsample
    assert reparameterised(dist) is expected


def _replica_grads(name: str, estimator: str, seed: int) -> Tensor:
    """``(N, P)``: N independent one-sample gradients of E[f] in the flattened parameters."""
    params, make, f, _ = RSAMPLE[name]
    torch.manual_seed(seed)
    reps = [p.expand(N, *p.shape).clone().requires_grad_() for p in params]
    lt.expectation(f, make(*reps), 1, estimator).sum().backward()
    return torch.cat([r.grad.reshape(N, -1) for r in reps], 1)


def _uniform_exact_grad() -> Tensor:
    """d/d(low, high) of E[x^2] = (low^2 + low high + high^2) / 3 for Uniform(low, high)."""
    lo, hi = (p.clone().requires_grad_() for p in RSAMPLE["Uniform"][0])
    return torch.cat(torch.autograd.grad((lo**2 + lo * hi + hi**2) / 3, [lo, hi]))


# Wishart: torch's own rsample cannot be differentiated on a batch (an in-place resampling of
# singular draws breaks autograd, plain torch included), so only its classification is tested.
STATISTICAL = [name for name in RSAMPLE if name != "Wishart"]


@pytest.mark.parametrize("name", STATISTICAL)
def test_auto_is_unbiased_on_every_rsample_distribution(name: str) -> None:
    """auto's mean gradient equals the score function's (both from N independent replicas): a
    two-sample z-test per parameter entry, failure rate 1e-3 per distribution, Bonferroni over
    the entries. Uniform's moving bounds are refused by the score function: the exact gradient
    is the reference there. On OneHotCategoricalStraightThrough the old auto took the
    straight-through pathwise gradient: relative bias 0.77, |z| in the hundreds."""
    auto = _replica_grads(name, "auto", 0)
    if name == "Uniform":
        ref, ref_se = _uniform_exact_grad(), torch.zeros(2, dtype=DT)
    else:
        score = _replica_grads(name, "score_function", 1)
        ref, ref_se = score.mean(0), score.var(0) / N
    z = (auto.mean(0) - ref).abs() / (auto.var(0) / N + ref_se).sqrt()
    assert (z <= z_bonferroni(1e-3, z.numel())).all(), (name, z)


def test_pathwise_refuses_a_straight_through_sampler() -> None:
    dist = D.OneHotCategoricalStraightThrough(logits=torch.zeros(3, requires_grad=True))
    with pytest.raises(ValueError, match="Pathwise: the rsample of OneHotCategoricalStraight"):
        lt.expectation(lambda x: (x @ V.float()) ** 2, dist, 4, "pathwise")


def test_the_rule_is_stated_once_beside_the_metadata() -> None:
    from logtrick.pathwise import REPARAMETERISATION_RULE

    assert REPARAMETERISATION_RULE in lt.Auto.requires
    assert REPARAMETERISATION_RULE in lt.estimator_table()


def test_a_nan_gradient_through_autos_pathwise_path_is_an_error() -> None:
    """f = where(x > 0, sqrt(x), 0): the derivative of sqrt at x < 0 is NaN, 0 * NaN = NaN."""
    mu = torch.tensor(0.2, requires_grad=True)
    torch.manual_seed(0)
    est = lt.expectation(lambda x: torch.where(x > 0, x.sqrt(), 0.0), D.Normal(mu, 1.0), 64)
    with pytest.raises(ValueError, match=r"f: .*NaN or inf.*pathwise.*score_function"):
        est.backward()
    mu.grad = None
    lt.expectation(
        lambda x: torch.where(x > 0, x.sqrt(), 0.0), D.Normal(mu, 1.0), 64, "score_function"
    ).backward()
    assert torch.isfinite(mu.grad)


# ------------------------------------------------------------------ a shared node, leave-one-out


def _shared_graph(baseline: object) -> Tensor:
    theta = torch.zeros(2, requires_grad=True)
    p1 = D.Bernoulli(logits=theta[0].expand(1))
    x1 = p1.sample()  # one sample shared by the K = 8 downstream samples
    p2 = D.Bernoulli(logits=(theta[1] + x1).expand(8))
    x2 = p2.sample()
    lt.dice_surrogate(
        {"c": (x1 - x2) ** 2 + 3 * x1},
        {"x1": p1.log_prob(x1), "x2": p2.log_prob(x2)},
        {"c": ["x1", "x2"]},
        {"x1": baseline, "x2": "leave_one_out"},
    ).mean().backward()
    assert theta.grad is not None
    return theta.grad


def test_a_shared_node_with_leave_one_out_is_refused_naming_the_node() -> None:
    """Sum_k (c_k - b_k) = 0 exactly for a node whose one sample all K costs share: its gradient
    was silently 0. A baseline independent of the call's samples stays allowed."""
    with pytest.raises(ValueError, match=r"baselines\['x1'\]: LeaveOneOut .* size 1 along"):
        _shared_graph("leave_one_out")
    with pytest.raises(ValueError, match=r"log_prob"):
        lt.surrogate(torch.rand(8), torch.zeros(1, requires_grad=True), "leave_one_out")
    assert _shared_graph(0.5).shape == (2,)
    assert _shared_graph(None).shape == (2,)


# ------------------------------------------------------------------ bool and int costs


BOOL_F = {
    "score_function": D.Bernoulli,
    "arm": D.Bernoulli,
    "disarm": D.Bernoulli,
    "relax": D.Bernoulli,
    "measure_valued": D.Normal,
}
"""The estimators that take a black-box f (rebar differentiates f: a bool f is refused by
test_an_estimator_that_differentiates_f_refuses_a_black_box)."""


@pytest.mark.parametrize("estimator", list(BOOL_F))
@pytest.mark.parametrize("kind", ["bool", "int"])
def test_bool_and_int_costs_equal_their_float_version(estimator: str, kind: str) -> None:
    """f = (b.sum(-1) == 2): the gradient is the float f's on the same random numbers."""
    dtype = torch.bool if kind == "bool" else torch.int64

    def grad(as_float: bool) -> Tensor:
        theta = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=DT, requires_grad=True)
        if BOOL_F[estimator] is D.Bernoulli:
            dist: D.Distribution = D.Bernoulli(logits=theta)
        else:
            dist = D.Normal(theta, torch.tensor(1.0, dtype=DT))

        def f(b: Tensor) -> Tensor:
            hit = (b > 0.5).sum(-1) == 2
            return hit.to(DT) if as_float else hit.to(dtype)

        torch.manual_seed(3)
        est = lt.Relax(num_inputs=4).to(DT) if estimator == "relax" else estimator
        value = lt.expectation(f, dist, 16, est)
        assert value.dtype == DT
        value.backward()
        assert theta.grad is not None
        return theta.grad

    torch.testing.assert_close(grad(False), grad(True))


# ------------------------------------------------------------------ hostile f


def test_an_f_that_writes_into_its_input_is_refused() -> None:
    theta = torch.zeros(3, requires_grad=True)
    for est in ("score_function", "auto", "arm"):
        with pytest.raises(ValueError, match=r"f: modified its input x in place"):
            lt.expectation(lambda x: x.add_(1).sum(-1), D.Bernoulli(logits=theta), 4, est)


def test_an_f_that_reduces_a_leading_batch_dimension_is_refused() -> None:
    """(x * w[:, None]).sum(1) on a (3, 3) batch keeps the shape (K, 3) but sums the wrong
    dimension: its off-diagonal gradients were 0.011 against 0.25-0.75."""
    w = torch.tensor([1.0, 2.0, 3.0])
    mu = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"f: .*reduced a batch dimension other than the trailing"):
        lt.expectation(lambda x: (x * w[:, None]).sum(1), D.Normal(mu, 1.0), 8, "score_function")
    out = lt.expectation(lambda x: (x * w).sum(-1), D.Normal(mu, 1.0), 8, "score_function")
    assert out.shape == (3,)


def test_a_complex_f_is_refused() -> None:
    mu = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"f: returned complex values"):
        lt.expectation(lambda x: x.to(torch.complex64), D.Normal(mu, 1.0), 8, "score_function")


# ------------------------------------------------------------------ raw tracebacks, now clean


@pytest.mark.parametrize("baseline", [None, 0.5, "moving_average", "leave_one_out"])
def test_every_baseline_runs_under_inference_mode(baseline: object) -> None:
    with torch.inference_mode():
        value = lt.expectation(
            lambda x: x.sum(-1), D.Bernoulli(logits=torch.zeros(3)), 4, "score_function", baseline
        )
        cost = torch.ones(4)
        assert lt.surrogate(cost, torch.zeros(4), baseline).shape == (4,)
    assert value.shape == ()


@pytest.mark.parametrize("baseline", [None, "leave_one_out"])
def test_vmap_over_expectation(baseline: object) -> None:
    def grad(mu: Tensor) -> Tensor:
        dist = D.Independent(D.Normal(mu, 1.0), 1)
        return lt.expectation(lambda x: (x**2).sum(-1), dist, 4, "score_function", baseline)

    out = torch.vmap(torch.func.grad(grad), randomness="different")(torch.zeros(5, 3))
    assert out.shape == (5, 3) and torch.isfinite(out).all()


def test_relax_with_another_dtype_than_the_logits_names_the_control_variate() -> None:
    logits = torch.zeros(3, dtype=DT, requires_grad=True)
    with pytest.raises(TypeError, match=r"control_variate: .*float32.*float64"):
        lt.expectation(lambda b: b.sum(-1), D.Bernoulli(logits=logits), 4, lt.Relax(num_inputs=3))


def test_optimal_scale_with_a_parameter_the_distribution_does_not_use() -> None:
    theta, other = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"params: OptimalScale's params\[1\]"):
        lt.expectation(
            lambda b: b.sum(-1),
            D.Bernoulli(logits=theta),
            4,
            "score_function",
            lt.OptimalScale([theta, other]),
        )


# ------------------------------------------------------------------ sequence APIs


def test_token_log_probs_of_zero_length_completions_and_uint8_ids() -> None:
    logits = torch.zeros(2, 0, 5, requires_grad=True)
    out = lt.token_log_probs(logits, torch.zeros(2, 0, dtype=torch.long))
    assert out.shape == (2, 0)
    logits = torch.randn(2, 3, 5)
    ids = torch.tensor([[0, 4, 2], [1, 1, 3]])
    torch.testing.assert_close(
        lt.token_log_probs(logits, ids.to(torch.uint8)), lt.token_log_probs(logits, ids)
    )


@pytest.mark.parametrize("method", ["dr_grpo", "mean"])
def test_groups_of_one_are_refused_by_every_group_mean_method(method: str) -> None:
    """r - mean(r) is 0 for a group of one: all-zero advantages, silently."""
    with pytest.raises(ValueError, match=r"rewards: .*k >= 2"):
        lt.grouped_advantages(torch.tensor([[1.0], [2.0], [0.0]]), method=method)


def test_sequence_surrogate_refuses_positive_log_probs() -> None:
    lp = torch.tensor([[0.5, -0.1]], requires_grad=True)
    with pytest.raises(ValueError, match=r"token_log_probs: 1 valid entries are positive"):
        lt.sequence_surrogate(lp, torch.ones(1, 2, dtype=torch.bool), torch.ones(1))


def test_sample_completions_refuses_a_stop_token_outside_the_vocabulary() -> None:
    class Uniform5(torch.nn.Module):
        def forward(self, ids: Tensor) -> Tensor:
            return torch.zeros(*ids.shape, 5)

    with pytest.raises(ValueError, match=r"stop_token: 7 is outside the model's vocabulary"):
        lt.sample_completions(Uniform5(), torch.zeros(1, 1, dtype=torch.long), 2, 50, stop_token=7)


# ------------------------------------------------------------------ the sweep: every "requires"


def _step(y: Tensor) -> Tensor:
    return (y > 0.5).to(y.dtype).sum(-1)


@pytest.mark.parametrize(
    "estimator", ["pathwise", "gumbel_softmax", "straight_through", "rebar", "delta_method"]
)
def test_an_estimator_that_differentiates_f_refuses_a_black_box(estimator: str) -> None:
    """ "f differentiable" in their requires: a thresholding f carries no gradient. REBAR used to
    return an exact (biased) zero, the others a raw autograd error."""
    theta = torch.zeros(3, requires_grad=True)
    dist: D.Distribution = D.Bernoulli(logits=theta)
    if estimator in ("pathwise", "delta_method"):
        dist = D.Independent(D.Normal(theta, 1.0), 1)
    with pytest.raises(ValueError, match=r"f: .* carries no gradient"):
        lt.expectation(_step, dist, 8, estimator).backward()


@pytest.mark.parametrize("seed", [0, 1])
def test_measure_valued_is_unbiased_for_a_black_box_f(seed: int) -> None:
    """ "f need not be differentiable": f = 1[x > 0] for x ~ N(mu, sigma), E[f] = Phi(mu / sigma):
    d/dmu = phi(mu/sigma)/sigma, d/dsigma = -mu/sigma^2 phi(mu/sigma). 2 checks, failure rate
    1e-3."""
    n, mu0, s0 = 40_000, 0.4, 1.3
    mu = torch.full((n,), mu0, dtype=DT, requires_grad=True)
    sigma = torch.full((n,), s0, dtype=DT, requires_grad=True)
    torch.manual_seed(seed)
    lt.MeasureValued().terms(
        lambda x: (x > 0).to(DT), D.Normal(mu, sigma), 1, None, None
    ).sum().backward()
    z0 = torch.tensor(mu0 / s0, dtype=DT)
    phi = torch.exp(-0.5 * z0**2) / (2 * torch.pi) ** 0.5
    truth = torch.stack([phi / s0, -mu0 / s0**2 * phi])
    grads = torch.stack([mu.grad, sigma.grad], 1)
    z = (grads.mean(0) - truth).abs() / (grads.std(0) / n**0.5)
    assert (z <= z_bonferroni(1e-3, 2)).all(), z


# Each estimator's "requires" and "unbiased" claims, and the tests that hold them to it (by
# module::name). A new estimator without an entry fails here: its claims need a check or a
# measurement before it lands.
CLAIMS = {
    "score_function": ["test_bad_input.py (moving support refused)", "test_estimators.py"],
    "pathwise": [
        "test_pathwise_refuses_a_straight_through_sampler",
        "test_an_estimator_that_differentiates_f_refuses_a_black_box",
        "test_diagnostics.py::test_check_pathwise_flags_a_step_and_passes_a_smooth_f",
    ],
    "auto": [
        "test_auto_chooses_pathwise_only_for_a_true_reparameterisation",
        "test_auto_is_unbiased_on_every_rsample_distribution",
        "test_a_nan_gradient_through_autos_pathwise_path_is_an_error",
    ],
    "arm": ["test_arm.py", "test_bool_and_int_costs_equal_their_float_version"],
    "disarm": ["test_arm.py", "test_bool_and_int_costs_equal_their_float_version"],
    "measure_valued": [
        "test_measure_valued.py",
        "test_measure_valued_is_unbiased_for_a_black_box_f",
        "test_measure_valued.py::test_coupling_doubles_the_loc_variance_for_linear_f_and_lowers_the_total",
    ],
    "delta_method": [
        "test_measure_valued.py",
        "test_an_estimator_that_differentiates_f_refuses_a_black_box",
    ],
    "gumbel_softmax": [
        "test_relax.py",
        "test_an_estimator_that_differentiates_f_refuses_a_black_box",
    ],
    "straight_through": [
        "test_relax.py",
        "test_an_estimator_that_differentiates_f_refuses_a_black_box",
    ],
    "rebar": ["test_relax.py", "test_an_estimator_that_differentiates_f_refuses_a_black_box"],
    "relax": [
        "test_relax.py",
        "test_relax_with_another_dtype_than_the_logits_names_the_control_variate",
    ],
}


def test_every_estimator_has_its_claims_checked() -> None:
    assert set(CLAIMS) == set(lt.ESTIMATORS), set(lt.ESTIMATORS) ^ set(CLAIMS)
    here = set(globals())
    for name, tests in CLAIMS.items():
        for test in tests:
            if test.startswith("test_") and "." not in test:
                assert test in here, (name, test)


BERNOULLI_EST = ("arm", "disarm", "relax", "rebar", "gumbel_softmax", "straight_through")


def _problem(estimator: str, theta: Tensor) -> tuple[Callable[[Tensor], Tensor], D.Distribution]:
    if estimator in BERNOULLI_EST:
        return lambda b: ((b - 0.4) ** 2).sum(-1), D.Independent(D.Bernoulli(logits=theta), 1)
    return lambda x: (x**2).sum(-1), D.Independent(D.Normal(theta, 1.0), 1)


@pytest.mark.parametrize("estimator", [*sorted(lt.ESTIMATORS), "optimal_scale"])
def test_every_estimator_gives_its_value_under_inference_mode(estimator: str) -> None:
    """OptimalScale and the delta method raised autograd errors there (no graph to take)."""
    baseline = None
    if estimator == "optimal_scale":
        estimator, baseline = (
            "score_function",
            lt.OptimalScale([torch.zeros(3, requires_grad=True)]),
        )
    f, dist = _problem(estimator, torch.zeros(3))
    with torch.inference_mode():
        value = lt.expectation(f, dist, 4, estimator, baseline)
    assert value.shape == () and torch.isfinite(value)


@pytest.mark.parametrize("estimator", ["arm", "disarm", "measure_valued", "gumbel_softmax"])
def test_vmap_over_the_first_order_estimators(estimator: str) -> None:
    def value(theta: Tensor) -> Tensor:
        f, dist = _problem(estimator, theta)
        return lt.expectation(f, dist, 4, estimator)

    out = torch.vmap(torch.func.grad(value), randomness="different")(torch.zeros(5, 3))
    assert out.shape == (5, 3) and torch.isfinite(out).all()


def test_the_delta_method_under_vmap_names_the_way_out() -> None:
    def value(theta: Tensor) -> Tensor:
        f, dist = _problem("delta_method", theta)
        return lt.expectation(f, dist, 4, "delta_method")

    with pytest.raises(ValueError, match=r"DeltaMethod .*torch.vmap.*score_function"):
        torch.vmap(torch.func.grad(value), randomness="different")(torch.zeros(5, 3))
