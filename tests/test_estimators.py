r"""Tests of ``lt.expectation``: value, shapes, and unbiasedness of every estimator × baseline.

Tier (b), the unbiasedness matrix: for 11 distribution families and test functions f whose
expectation is known in closed form (linear, quadratic, indicator), every estimator
(``score_function``, ``pathwise`` where the family has ``rsample`` and f is differentiable,
``auto``) with every baseline it uses (the pathwise estimator, also when ``auto`` picks it, has
no score term and takes none) gives a gradient whose mean over ``R`` independent replicas equals
:math:`\nabla_\theta \mathbb{E}[f]` within :math:`z\,\hat\sigma/\sqrt R`. The moving
averages (the object, and the short name resolved once) are warmed up first, so their ``b`` is
not zero.

The replicas are vectorised: each parameter has a leading batch dimension of size ``R`` holding
``R`` copies of the same value, so ``expectation(...).sum().backward()`` fills ``param.grad[r]``
with replica ``r``'s independent estimate (baselines act along the sample dimension per batch
element). The truth is ``torch.autograd.grad`` of the closed-form expectation; the by-hand
gradients of a few of them are checked in ``test_closed_form_gradients_match_hand_formulas``.
Closed forms: Normal E[x²] = μ² + σ², P(x > c) = 1 − Φ((c − μ)/σ); Poisson E[x²] = λ + λ²,
P(x = 0) = e^{−λ}; Exponential E[x] = 1/λ, E[x²] = 2/λ², P(x > c) = e^{−λc}; Gamma(α, β)
E[x] = α/β, E[x²] = α(α+1)/β²; Beta(a, b) E[x] = a/(a+b), E[x²] = a(a+1)/((a+b)(a+b+1));
Binomial(n, p) E[x²] = np(1−p) + n²p², P(x = n) = pⁿ; MultivariateNormal(μ, LLᵀ)
E[|x|²] = |μ|² + ‖L‖²_F, P(wᵀx > c) = 1 − Φ((c − wᵀμ)/‖Lᵀw‖).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Distribution,
    Exponential,
    Gamma,
    Independent,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    Poisson,
)

import logtrick as lt
from logtrick.baselines import resolve_baseline
from stats import assert_mean, z_bonferroni, z_scores

DT = torch.float64
R, K = 2000, 4  # replicas, samples per estimate
R_OPTIMAL = 256  # OptimalScale takes per-sample gradients: O((R K)^2) work, so fewer replicas
WARMUP = 5  # MovingAverage calls before the measured one
V3 = torch.tensor([1.0, -2.0, 3.0], dtype=DT)
W2 = torch.tensor([1.0, -0.5], dtype=DT)


def t(*values: float) -> Tensor:
    """A float64 tensor (a scalar for one value)."""
    return torch.tensor(values if len(values) != 1 else values[0], dtype=DT)


def _phi(z: Tensor) -> Tensor:
    return Normal(t(0.0), t(1.0)).cdf(z)


def _gt(x: Tensor, c: float) -> Tensor:
    return (x > c).to(DT)


def _mvn_tril(raw: Tensor) -> Tensor:
    return torch.tril(raw)


@dataclass(frozen=True)
class Family:
    """A distribution family: its parameters (one replica), constructor and test functions.

    ``fns[kind] = (f, mean)``: f maps samples ``(K, R) + event_shape`` to ``(K, R)``, and
    ``mean(params)`` is the closed-form E[f] for one replica's parameters.
    """

    params: tuple[Tensor, ...]
    make: Callable[[list[Tensor]], Distribution]
    fns: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[list[Tensor]], Tensor]]]


def _p(logits: Tensor) -> Tensor:
    return torch.sigmoid(logits)


FAMILIES: dict[str, Family] = {
    "normal": Family(
        (t(0.3), t(1.2)),
        lambda p: Normal(p[0], p[1]),
        {
            "linear": (lambda x: x, lambda p: p[0]),
            "quadratic": (lambda x: x**2, lambda p: p[0] ** 2 + p[1] ** 2),
            "indicator": (lambda x: _gt(x, 0.5), lambda p: 1 - _phi((0.5 - p[0]) / p[1])),
        },
    ),
    "bernoulli": Family(
        (t(0.4),),
        lambda p: Bernoulli(logits=p[0]),
        {
            "linear": (lambda x: 2 * x - 1, lambda p: 2 * _p(p[0]) - 1),
            "quadratic": (
                lambda x: (x - 0.45) ** 2 + 10,
                lambda p: _p(p[0]) * 0.55**2 + (1 - _p(p[0])) * 0.45**2 + 10,
            ),
        },
    ),
    "categorical": Family(
        (t(0.2, -0.5, 0.8),),
        lambda p: Categorical(logits=p[0]),
        {
            "linear": (lambda x: V3[x], lambda p: (torch.softmax(p[0], -1) * V3).sum()),
            "quadratic": (
                lambda x: x.to(DT) ** 2,
                lambda p: (torch.softmax(p[0], -1) * t(0.0, 1.0, 4.0)).sum(),
            ),
            "indicator": (lambda x: (x == 2).to(DT), lambda p: torch.softmax(p[0], -1)[2]),
        },
    ),
    "one_hot_categorical": Family(
        (t(0.2, -0.5, 0.8),),
        lambda p: OneHotCategorical(logits=p[0]),
        {
            "linear": (lambda x: (x * V3).sum(-1), lambda p: (torch.softmax(p[0], -1) * V3).sum()),
            "quadratic": (
                lambda x: (x * V3).sum(-1) ** 2,
                lambda p: (torch.softmax(p[0], -1) * V3**2).sum(),
            ),
            "indicator": (lambda x: x[..., 0], lambda p: torch.softmax(p[0], -1)[0]),
        },
    ),
    "poisson": Family(
        (t(2.5),),
        lambda p: Poisson(p[0]),
        {
            "linear": (lambda x: x, lambda p: p[0]),
            "quadratic": (lambda x: x**2, lambda p: p[0] + p[0] ** 2),
            "indicator": (lambda x: (x == 0).to(DT), lambda p: torch.exp(-p[0])),
        },
    ),
    "exponential": Family(
        (t(1.7),),
        lambda p: Exponential(p[0]),
        {
            "linear": (lambda x: x, lambda p: 1 / p[0]),
            "quadratic": (lambda x: x**2, lambda p: 2 / p[0] ** 2),
            "indicator": (lambda x: _gt(x, 0.5), lambda p: torch.exp(-0.5 * p[0])),
        },
    ),
    "gamma": Family(
        (t(2.5), t(1.5)),
        lambda p: Gamma(p[0], p[1]),
        {
            "linear": (lambda x: x, lambda p: p[0] / p[1]),
            "quadratic": (lambda x: x**2, lambda p: p[0] * (p[0] + 1) / p[1] ** 2),
        },
    ),
    "beta": Family(
        (t(2.0), t(3.0)),
        lambda p: Beta(p[0], p[1]),
        {
            "linear": (lambda x: x, lambda p: p[0] / (p[0] + p[1])),
            "quadratic": (
                lambda x: x**2,
                lambda p: p[0] * (p[0] + 1) / ((p[0] + p[1]) * (p[0] + p[1] + 1)),
            ),
        },
    ),
    "binomial": Family(
        (t(0.3),),
        lambda p: Binomial(5, logits=p[0]),
        {
            "linear": (lambda x: x, lambda p: 5 * _p(p[0])),
            "quadratic": (
                lambda x: x**2,
                lambda p: 5 * _p(p[0]) * (1 - _p(p[0])) + 25 * _p(p[0]) ** 2,
            ),
            "indicator": (lambda x: (x == 5).to(DT), lambda p: _p(p[0]) ** 5),
        },
    ),
    "independent_normal": Family(
        (t(0.3, -0.4), t(1.2, 0.7)),
        lambda p: Independent(Normal(p[0], p[1]), 1),
        {
            "linear": (lambda x: (x * W2).sum(-1), lambda p: (p[0] * W2).sum()),
            "quadratic": (lambda x: (x**2).sum(-1), lambda p: (p[0] ** 2 + p[1] ** 2).sum()),
            "indicator": (
                lambda x: _gt(x[..., 0], 0.5),
                lambda p: 1 - _phi((0.5 - p[0][0]) / p[1][0]),
            ),
        },
    ),
    "multivariate_normal": Family(
        (t(0.3, -0.4), torch.tensor([[1.0, 0.0], [0.5, 0.8]], dtype=DT)),
        lambda p: MultivariateNormal(p[0], scale_tril=_mvn_tril(p[1])),
        {
            "linear": (lambda x: (x * W2).sum(-1), lambda p: (p[0] * W2).sum()),
            "quadratic": (
                lambda x: (x**2).sum(-1),
                lambda p: (p[0] ** 2).sum() + (_mvn_tril(p[1]) ** 2).sum(),
            ),
            "indicator": (
                lambda x: _gt((x * W2).sum(-1), 0.2),
                lambda p: 1 - _phi((0.2 - (p[0] * W2).sum()) / (_mvn_tril(p[1]).T @ W2).norm()),
            ),
        },
    ),
}

BASELINES = ["none", "constant", "moving_average_name", "moving_average", "leave_one_out"]
BASELINES += ["learned", "optimal_scale"]


def _cases() -> list[tuple[str, str, str, str]]:
    cases = []
    for name, fam in FAMILIES.items():
        rsample = fam.make(list(fam.params)).has_rsample
        for kind in fam.fns:
            for estimator in ("score_function", "pathwise", "auto"):
                if estimator == "pathwise" and (not rsample or kind == "indicator"):
                    continue  # no rsample, or f has zero derivative almost everywhere
                # pathwise (also when auto picks it) has no score term: a baseline is refused
                # or unused (tested below)
                pathwise = rsample and kind != "indicator" and estimator != "score_function"
                baselines = ["none"] if pathwise else BASELINES
                cases.extend((name, kind, estimator, b) for b in baselines)
    return cases


CASES = _cases()
# Failure rate of the whole matrix 1e-2, split evenly (Bonferroni) over its cases; each case then
# splits its share over its checks (every parameter entry and the value).
ALPHA_CASE = 1e-2 / len(CASES)


def replicate(params: tuple[Tensor, ...], r: int) -> list[Tensor]:
    """``r`` independent copies of each parameter along a new leading dimension, as leaves."""
    return [p.expand(r, *p.shape).clone().requires_grad_() for p in params]


def make_baseline(kind: str, params: list[Tensor], r: int) -> object:
    """The baseline object for a case (the learned one with a random, sample-independent net)."""
    if kind == "none":
        return None
    if kind == "constant":
        return 1.5
    if kind == "moving_average_name":  # the name, resolved once and kept (warmed up below)
        return resolve_baseline("moving_average")
    if kind == "moving_average":
        return lt.MovingAverage(decay=0.8)
    if kind == "leave_one_out":
        return "leave_one_out"
    if kind == "learned":
        return lt.Learned(nn.Linear(3, 1).to(DT))
    return lt.OptimalScale(params)


def estimate(
    fam: Family, kind: str, estimator: str, baseline_kind: str, r: int
) -> tuple[list[Tensor], Tensor]:
    """``r`` independent gradient estimates (one row each, all parameters flattened) and values."""
    params = replicate(fam.params, r)
    dist = fam.make(params)
    f = fam.fns[kind][0]
    baseline = make_baseline(baseline_kind, params, r)
    context = torch.randn(r, 3, dtype=DT)  # the learned baseline's input: independent of x
    if isinstance(baseline, lt.MovingAverage):
        with torch.no_grad():
            for _ in range(WARMUP):
                lt.expectation(f, dist, K, estimator, baseline)
        assert baseline.steps == WARMUP
    value = lt.expectation(f, dist, K, estimator, baseline, context)
    assert value.shape == (r,)
    value.sum().backward()
    grads = [p.grad.reshape(r, -1) for p in params]
    return grads, value.detach()


def closed_form(fam: Family, kind: str) -> tuple[Tensor, Tensor]:
    """E[f] and its gradient (flattened, concatenated), by autograd on the closed form."""
    params = [p.clone().requires_grad_() for p in fam.params]
    mean = fam.fns[kind][1](params)
    grads = torch.autograd.grad(mean, params, allow_unused=True, materialize_grads=True)
    return mean.detach(), torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize(("family", "kind", "estimator", "baseline"), CASES)
def test_expectation_is_unbiased(family: str, kind: str, estimator: str, baseline: str) -> None:
    """Mean of R estimates of ∇E[f] (and of E[f]) equals the closed form within z·SE."""
    torch.manual_seed(zlib.crc32(f"{family}-{kind}-{estimator}-{baseline}".encode()))
    fam = FAMILIES[family]
    r = R_OPTIMAL if baseline == "optimal_scale" else R
    grads, value = estimate(fam, kind, estimator, baseline, r)
    true_mean, true_grad = closed_form(fam, kind)
    draws = torch.cat([*grads, value[:, None]], 1)
    truth = torch.cat([true_grad, true_mean[None]])
    assert_mean(draws, truth, ALPHA_CASE, what=f"{family} {kind} {estimator} {baseline}")


def test_unbiasedness_check_detects_a_biased_baseline() -> None:
    """Power: a baseline that includes the sample it multiplies (b_k = mean of all K costs)
    shrinks the score-function gradient by (K−1)/K; the same check must reject it."""
    torch.manual_seed(7)
    fam = FAMILIES["normal"]
    params = replicate(fam.params, R)
    value = lt.expectation(
        fam.fns["quadratic"][0],
        fam.make(params),
        K,
        "score_function",
        lambda cost, dim, ctx: cost.mean(dim, keepdim=True),
    )
    value.sum().backward()
    draws = torch.cat([p.grad.reshape(R, -1) for p in params], 1)
    z = z_scores(draws, closed_form(fam, "quadratic")[1])
    assert float(z.max()) > z_bonferroni(ALPHA_CASE, 3), f"bias not detected: |dev|/se = {z}"


def test_closed_form_gradients_match_hand_formulas() -> None:
    """(a) The autograd truths agree with gradients derived by hand."""
    mu, sigma = 0.3, 1.2
    torch.testing.assert_close(
        closed_form(FAMILIES["normal"], "quadratic")[1], t(2 * mu, 2 * sigma)
    )
    z = (0.5 - mu) / sigma  # d/dμ P(x > c) = φ(z)/σ, d/dσ = φ(z) z/σ
    dens = torch.exp(t(-(z**2) / 2)) / (2 * torch.pi) ** 0.5
    torch.testing.assert_close(
        closed_form(FAMILIES["normal"], "indicator")[1],
        torch.stack([dens / sigma, dens * z / sigma]),
    )
    p = torch.sigmoid(t(0.4))  # d/dθ E[(x − 0.45)² + 10] = (0.55² − 0.45²) p (1 − p)
    torch.testing.assert_close(
        closed_form(FAMILIES["bernoulli"], "quadratic")[1], (0.1 * p * (1 - p))[None]
    )
    torch.testing.assert_close(closed_form(FAMILIES["poisson"], "quadratic")[1], t([1 + 2 * 2.5]))
    torch.testing.assert_close(closed_form(FAMILIES["exponential"], "linear")[1], t([-1 / 1.7**2]))
    q = torch.sigmoid(t(0.3))  # d/dθ pⁿ = n pⁿ (1 − p)
    torch.testing.assert_close(
        closed_form(FAMILIES["binomial"], "indicator")[1], (5 * q**5 * (1 - q))[None]
    )
    a, b = 2.0, 3.0  # d/da a/(a+b) = b/(a+b)², d/db = −a/(a+b)²
    torch.testing.assert_close(closed_form(FAMILIES["beta"], "linear")[1], t(b / 25, -a / 25))


@pytest.mark.parametrize("baseline", ["none", "leave_one_out", "moving_average", "optimal_scale"])
def test_f_reducing_trailing_batch_dims_is_unbiased(baseline: str) -> None:
    """f may reduce trailing batch dims: Normal batch (R, 2), f = (x₁ + x₂)² couples them.

    expectation returns shape (R,); E[f] = (μ₁ + μ₂)² + σ₁² + σ₂², so ∇_μ = 2(μ₁ + μ₂) for
    both and ∇_σ = 2σ. The components' log-probabilities are summed into one joint sample.
    """
    torch.manual_seed(zlib.crc32(baseline.encode()))
    r = R_OPTIMAL if baseline == "optimal_scale" else R
    params = replicate((t(0.3, -0.1), t(1.2, 0.6)), r)
    dist = Normal(params[0], params[1])
    assert dist.batch_shape == (r, 2)
    b = make_baseline(baseline, params, r)
    if isinstance(b, lt.MovingAverage):
        with torch.no_grad():
            for _ in range(WARMUP):
                lt.expectation(lambda x: x.sum(-1) ** 2, dist, K, "score_function", b)
    value = lt.expectation(lambda x: x.sum(-1) ** 2, dist, K, "score_function", b)
    assert value.shape == (r,)
    value.sum().backward()
    draws = torch.cat([params[0].grad, params[1].grad, value.detach()[:, None]], 1)
    truth = t(0.4, 0.4, 2.4, 1.2, 0.2**2 + 1.2**2 + 0.6**2)
    assert_mean(draws, truth, 1e-3, what=f"reduced f, {baseline}")


def test_expectation_returns_batch_shape() -> None:
    """No reduction: (R, 3) Bernoulli and f elementwise -> estimate of shape (R, 3)."""
    theta = torch.zeros(5, 3, dtype=DT, requires_grad=True)
    value = lt.expectation(lambda x: x, Bernoulli(logits=theta), samples=4)
    assert value.shape == (5, 3)
    value = lt.expectation(lambda x: x.sum((-1, -2)), Bernoulli(logits=theta), samples=4)
    assert value.shape == ()


@pytest.mark.parametrize("baseline", ["none", "leave_one_out"])
def test_network_f_gets_its_ordinary_gradient(baseline: str) -> None:
    """f(x) = w·x with a parameter w: w.grad = (1/K) Σ x_k, unbiased for E[x] = μ."""
    torch.manual_seed(8)
    loc = torch.full((R,), 0.7, dtype=DT, requires_grad=True)
    w = torch.full((R,), 2.0, dtype=DT, requires_grad=True)
    value = lt.expectation(lambda x: w * x, Normal(loc, 1.5), K, "score_function", baseline)
    value.sum().backward()
    draws = torch.stack([w.grad, loc.grad], 1)  # ∂/∂w E[w x] = μ, ∂/∂μ = w
    assert_mean(draws, t(0.7, 2.0), 1e-3, what=f"network f, {baseline}")


def test_pathwise_matches_hand_formula() -> None:
    """(a) Pathwise, f = x², x = μ + σε: ∇μ = mean 2x, ∇σ = mean 2xε."""
    mu, sigma = t(0.4).requires_grad_(), t(1.3).requires_grad_()
    torch.manual_seed(10)
    lt.expectation(lambda x: x**2, Normal(mu, sigma), 5, "pathwise").backward()
    torch.manual_seed(10)
    eps = torch.randn(5, dtype=DT)
    x = 0.4 + 1.3 * eps
    torch.testing.assert_close(mu.grad, (2 * x).mean())
    torch.testing.assert_close(sigma.grad, (2 * x * eps).mean())


def _square(x: Tensor) -> Tensor:
    return x**2


def _above(x: Tensor) -> Tensor:
    return _gt(x, 0.2)


@pytest.mark.parametrize(("f", "same_as"), [(_square, "pathwise"), (_above, "score_function")])
def test_auto_picks_pathwise_or_score_function(f: Callable, same_as: str) -> None:
    """auto = pathwise for a differentiable f, score function (same draws) for an indicator."""
    grads = []
    for estimator in ("auto", same_as):
        mu = torch.zeros(4, dtype=DT, requires_grad=True)
        torch.manual_seed(11)
        lt.expectation(f, Normal(mu, 1.0), 3, estimator).sum().backward()
        grads.append(mu.grad)
    assert grads[0] is not None and bool((grads[0] != 0).all())
    torch.testing.assert_close(grads[0], grads[1])
    other = "score_function" if same_as == "pathwise" else "pathwise"
    if other == "score_function":  # and differs from the other estimator on the same draws
        mu = torch.zeros(4, dtype=DT, requires_grad=True)
        torch.manual_seed(11)
        lt.expectation(f, Normal(mu, 1.0), 3, other).sum().backward()
        assert not torch.allclose(mu.grad, grads[0])


def test_auto_calls_f_once() -> None:
    """A black-box f (a simulator, say) is evaluated once per call, also when auto falls back."""
    calls = []

    def f(x: Tensor) -> Tensor:
        calls.append(x.shape)
        return _gt(x, 0.0)

    mu = torch.zeros(3, dtype=DT, requires_grad=True)
    for estimator in ("auto", "score_function"):
        lt.expectation(f, Normal(mu, 1.0), 4, estimator, "leave_one_out").sum().backward()
    assert calls == [(4, 3), (4, 3)]
