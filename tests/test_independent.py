"""``Independent`` (torch's vector form, e.g. ``Independent(Bernoulli(logits), 1)``) is accepted by
every estimator that supports the distribution inside it.

Tiers: (c) with the same random numbers, the ``Independent`` form gives exactly the terms and the
gradient of the plain form whose f reduces the same dimensions (nested ``Independent`` too);
(b) unbiasedness of the unbiased estimators against exact enumeration of the ``Independent``
form, tolerance :math:`z\\,\\hat\\sigma/\\sqrt N` with z from a stated failure rate (Bonferroni).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal, OneHotCategorical

import logtrick as lt
from stats import assert_mean

DT = torch.float64
THETA = torch.tensor([[-1.0, 0.3, 1.5], [0.4, -0.2, 0.8]], dtype=DT)  # batch (2,), event (3,)
TARGET = torch.tensor([0.2, 0.7, 0.45], dtype=DT)
LOGITS = torch.tensor([[0.5, -1.0, 0.2, 1.0], [0.0, 0.0, 2.0, -1.0]], dtype=DT)
VALUES = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)


def quadratic(b: Tensor) -> Tensor:
    """``(..., 3) -> (...)``: couples the components (b0 * b1), differentiable on relaxed b."""
    return ((b - TARGET) ** 2).sum(-1) + 2.0 * b[..., 0] * b[..., 1]


def one_hot_f(y: Tensor) -> Tensor:
    """``(..., 2, 4) -> (...)``: two coupled categorical components given as one-hot vectors."""
    return ((y @ VALUES) ** 2).sum(-1) + 3.0 * (y[..., 0, :] * y[..., 1, :]).sum(-1)


# name -> factory taking the number of logits of one joint sample (the size of Relax's network)
ESTIMATORS: dict[str, Callable[[int], object]] = {
    "arm": lambda n: lt.ARM(),
    "disarm": lambda n: lt.DisARM(),
    "rebar": lambda n: lt.Rebar().to(DT),
    "relax": lambda n: lt.Relax(num_inputs=n, hidden=4).to(DT),
    "gumbel_softmax": lambda n: lt.GumbelSoftmax(0.7),
    "straight_through": lambda n: lt.StraightThrough(),
}
UNBIASED = ["arm", "disarm", "rebar", "relax"]


def _terms_and_grad(est: object, f: Callable, make: Callable, theta0: Tensor, k: int, seed: int):
    theta = theta0.clone().requires_grad_(True)
    torch.manual_seed(seed)
    terms = est.terms(f, make(theta), k, None, None)  # type: ignore[attr-defined]
    terms.mean(0).sum().backward()
    return terms.detach(), theta.grad


def _perturb(est: object) -> object:
    """Give a network control variate non-zero output weights (so that it is exercised)."""
    cv = getattr(est, "control_variate", None)
    if cv is not None:
        torch.manual_seed(5)
        nn.init.normal_(cv.out.weight)
    return est


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize(
    "form", ["independent", "nested"], ids=["Independent(Bernoulli,1)", "nested_Independent"]
)
def test_bernoulli_independent_form_equals_plain_form(name: str, form: str) -> None:
    """Same seed, same draws: terms and gradient equal the plain ``Bernoulli`` with f reducing
    the last dimension; f's output follows the ``Independent``'s batch shape."""
    make_est = ESTIMATORS[name]
    if form == "independent":
        wrapped = lambda t: Independent(Bernoulli(logits=t), 1)  # noqa: E731
        f, expected_shape, n = quadratic, (6, 2), 3
    else:  # batch (), event (2, 3): f reduces everything
        wrapped = lambda t: Independent(Independent(Bernoulli(logits=t), 1), 1)  # noqa: E731
        f, expected_shape, n = (lambda b: quadratic(b).sum(-1)), (6,), 6
    terms, grad = _terms_and_grad(_perturb(make_est(n)), f, wrapped, THETA, 6, seed=3)
    plain_terms, plain_grad = _terms_and_grad(
        _perturb(make_est(n)), f, lambda t: Bernoulli(logits=t), THETA, 6, seed=3
    )
    assert terms.shape == expected_shape
    torch.testing.assert_close(terms, plain_terms)
    torch.testing.assert_close(grad, plain_grad)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["rebar", "relax", "gumbel_softmax", "straight_through"])
@pytest.mark.parametrize("cls", [Categorical, OneHotCategorical])
def test_categorical_independent_form_equals_plain_form(name: str, cls: type) -> None:
    """``Independent(Categorical(logits (2, 4)), 1)``: f takes one-hot ``(K, 2, 4)``, returns
    ``(K,)`` (batch shape ``()``), exactly as for the plain form with f reducing dimension 1."""
    make_est = ESTIMATORS[name]
    wrapped = lambda t: Independent(cls(logits=t), 1)  # noqa: E731
    terms, grad = _terms_and_grad(_perturb(make_est(8)), one_hot_f, wrapped, LOGITS, 5, seed=4)
    plain = _terms_and_grad(
        _perturb(make_est(8)), one_hot_f, lambda t: cls(logits=t), LOGITS, 5, seed=4
    )
    assert terms.shape == (5,)
    torch.testing.assert_close(terms, plain[0])
    torch.testing.assert_close(grad, plain[1])


# 4 estimators x 6 logits = 24 checks at a total failure rate of 1e-3
@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_for_independent_bernoulli_against_enumeration(name: str) -> None:
    """``Independent(Bernoulli(logits (2, 3)), 1)``: 20 000 independent one-draw estimates of the
    gradient, side by side in a leading batch dimension, against the exact gradient."""
    theta = THETA.clone().requires_grad_(True)
    lt.enumerate_expectation(quadratic, Independent(Bernoulli(logits=theta), 1)).sum().backward()
    truth = theta.grad
    reps = 20_000
    batch = THETA.expand(reps, 2, 3).clone().requires_grad_(True)
    torch.manual_seed(10)
    est = _perturb(ESTIMATORS[name](3))
    value = lt.expectation(quadratic, Independent(Bernoulli(logits=batch), 1), 1, estimator=est)
    assert value.shape == (reps, 2)
    value.sum().backward()
    assert_mean(batch.grad, truth, alpha=1e-3 / 4, what=f"{name} on Independent(Bernoulli)")


def test_straight_through_unbiased_for_multilinear_f_in_independent_form() -> None:
    """StraightThrough is biased in general but unbiased for f affine in each component: 6
    checks at a failure rate of 1e-3."""
    multilinear = lambda b: b[..., 0] * b[..., 1] - 2.0 * b[..., 1] * b[..., 2] + b[..., 0]  # noqa: E731
    theta = THETA.clone().requires_grad_(True)
    lt.enumerate_expectation(multilinear, Independent(Bernoulli(logits=theta), 1)).sum().backward()
    batch = THETA.expand(20_000, 2, 3).clone().requires_grad_(True)
    torch.manual_seed(11)
    dist = Independent(Bernoulli(logits=batch), 1)
    lt.expectation(multilinear, dist, 1, estimator="straight_through").sum().backward()
    assert_mean(batch.grad, theta.grad, alpha=1e-3, what="StraightThrough, multilinear f")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_f_output_follows_the_independent_batch_shape(name: str) -> None:
    """f keeping the reinterpreted dimension returns ``(K, 2, 3)`` where the ``Independent``'s
    batch shape is ``(2,)``: refused with the allowed shapes named."""
    dist = Independent(Bernoulli(logits=THETA.clone().requires_grad_(True)), 1)
    with pytest.raises(
        ValueError, match=r"f: expected f\(x\) of shape \(samples,\) \+ batch_shape"
    ):
        ESTIMATORS[name](3).terms(lambda b: b, dist, 4, None, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_unsupported_base_is_named(name: str) -> None:
    dist = Independent(Normal(torch.zeros(3), 1.0), 1)
    with pytest.raises(TypeError, match=r"needs a Bernoulli.*got Independent\(Normal\)"):
        ESTIMATORS[name](3).terms(lambda x: x.sum(-1), dist, 2, None, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["measure_valued", "delta_method"])
def test_gaussian_estimators_accept_nested_independent(name: str) -> None:
    """MeasureValued and DeltaMethod: ``Independent(Independent(Normal, 1), 1)`` gives the terms
    and gradient of ``Normal`` with f reducing both dimensions, on the same draws."""
    loc = torch.tensor([[0.3, -0.5], [1.0, 0.2]], dtype=DT)
    f = lambda x: (x**2).sum((-2, -1)) + x[..., 0, 0] * x[..., 1, 1]  # noqa: E731
    est = lt.ESTIMATORS[name]()

    def nested(t: Tensor) -> Independent:
        return Independent(Independent(Normal(t, 1.0), 1), 1)

    terms, grad = _terms_and_grad(est, f, nested, loc, 4, seed=6)
    plain_terms, plain_grad = _terms_and_grad(est, f, lambda t: Normal(t, 1.0), loc, 4, seed=6)
    assert terms.shape == (4,)
    torch.testing.assert_close(terms, plain_terms)
    torch.testing.assert_close(grad, plain_grad)


def test_enumeration_of_nested_independent() -> None:
    """Both levels' reinterpreted dimensions (2 in all) form one joint sample: f is called once,
    on the 2^6 configurations, and the value equals the plain form's."""
    calls = []

    def f(b: Tensor) -> Tensor:
        calls.append(tuple(b.shape))
        return quadratic(b).sum(-1)

    theta = THETA.clone().requires_grad_(True)
    nested = lt.enumerate_expectation(f, Independent(Independent(Bernoulli(logits=theta), 1), 1))
    assert calls == [(64, 2, 3)]
    torch.testing.assert_close(nested, lt.enumerate_expectation(f, Bernoulli(logits=THETA)))
