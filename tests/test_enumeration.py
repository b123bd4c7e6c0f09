"""enumerate_expectation: exact values and gradients against closed forms and a brute-force loop."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.distributions import (
    Bernoulli,
    Binomial,
    Categorical,
    Independent,
    Normal,
    OneHotCategorical,
)

from logtrick.enumeration import enumerate_expectation

DT = torch.float64


def test_bernoulli_product_value_and_gradient_match_closed_form() -> None:
    theta = torch.tensor([-1.0, 0.3, 2.0], dtype=DT, requires_grad=True)
    t = torch.tensor([0.2, 0.7, 0.45], dtype=DT)
    # f couples the components (a product term), so the Cartesian product is needed
    value = enumerate_expectation(
        lambda b: ((b - t) ** 2).sum(-1) + b.prod(-1), Bernoulli(logits=theta)
    )
    value.backward()
    with torch.no_grad():
        p = torch.sigmoid(theta)
        expected = (p * (1 - t) ** 2 + (1 - p) * t**2).sum() + p.prod()
        dp = p * (1 - p)  # dp/dθ
        grad = dp * ((1 - t) ** 2 - t**2) + dp * p.prod() / p
    assert value.shape == ()
    torch.testing.assert_close(value.detach(), expected)
    torch.testing.assert_close(theta.grad, grad)


def test_elementwise_f_keeps_the_batch_and_calls_f_once() -> None:
    theta = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.5, 3.0]], dtype=DT)
    calls = []

    def f(b: torch.Tensor) -> torch.Tensor:
        calls.append(b.shape)
        return 3.0 * b - 1.0

    value = enumerate_expectation(f, Bernoulli(logits=theta))
    assert value.shape == (2, 3)
    torch.testing.assert_close(value, 3.0 * torch.sigmoid(theta) - 1.0)
    assert calls == [(2, 2, 3)]  # the two support points, side by side for every element


def test_matches_brute_force_loop_over_configurations() -> None:
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(4, generator=gen, dtype=DT)
    table = torch.randn(2, 2, 2, 2, generator=gen, dtype=DT)  # an arbitrary f on {0,1}^4

    def f(b: torch.Tensor) -> torch.Tensor:
        idx = b.long()
        return table[idx[..., 0], idx[..., 1], idx[..., 2], idx[..., 3]]

    p = torch.sigmoid(theta)
    brute = torch.zeros((), dtype=DT)
    for config in itertools.product((0, 1), repeat=4):
        b = torch.tensor(config, dtype=DT)
        brute = brute + torch.prod(torch.where(b > 0, p, 1 - p)) * table[config]
    torch.testing.assert_close(enumerate_expectation(f, Bernoulli(logits=theta)), brute)


def test_leading_batch_kept_trailing_reduced() -> None:
    theta = torch.tensor([[0.0, 1.0], [-1.0, 2.0], [0.3, 0.3]], dtype=DT)
    value = enumerate_expectation(lambda b: b[..., 0] * b[..., 1], Bernoulli(logits=theta))
    assert value.shape == (3,)
    torch.testing.assert_close(value, torch.sigmoid(theta).prod(-1))


def test_independent_equals_reduced_bernoulli() -> None:
    theta = torch.tensor([[0.2, -0.4, 1.1], [1.0, 0.0, -3.0]], dtype=DT)
    f = lambda b: (b[..., 0] - b[..., 1] * b[..., 2]) ** 2  # noqa: E731
    a = enumerate_expectation(f, Independent(Bernoulli(logits=theta), 1))
    b = enumerate_expectation(f, Bernoulli(logits=theta))
    assert a.shape == (2,)
    torch.testing.assert_close(a, b)
    # f may also reduce the remaining batch dimension: 2^6 joint configurations
    c = enumerate_expectation(lambda x: f(x).sum(-1), Independent(Bernoulli(logits=theta), 1))
    torch.testing.assert_close(c, b.sum())


def test_categorical_and_one_hot() -> None:
    logits = torch.tensor([[0.5, -1.0, 0.2, 1.0], [0.0, 0.0, 2.0, -1.0]], dtype=DT)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DT)
    probs = torch.softmax(logits, -1)
    means = probs @ v
    torch.testing.assert_close(
        enumerate_expectation(lambda x: v[x], Categorical(logits=logits)), means
    )
    torch.testing.assert_close(
        enumerate_expectation(lambda y: y @ v, OneHotCategorical(logits=logits)), means
    )
    # the two components are independent: E[v_x0 v_x1] = E[v_x0] E[v_x1] (4^2 configurations)
    prod = enumerate_expectation(lambda x: v[x].prod(-1), Categorical(logits=logits))
    torch.testing.assert_close(prod, means.prod())


def test_binomial_moments() -> None:
    p = torch.tensor([0.3, 0.8], dtype=DT, requires_grad=True)
    n = 5
    m2 = enumerate_expectation(lambda x: x**2, Binomial(n, probs=p))
    expected = n * p * (1 - p) + (n * p) ** 2
    torch.testing.assert_close(m2, expected)
    m2.sum().backward()
    torch.testing.assert_close(p.grad, (n * (1 - 2 * p) + 2 * n * n * p).detach())


def test_gradient_of_f_own_parameters() -> None:
    w = torch.tensor(2.0, dtype=DT, requires_grad=True)
    theta = torch.tensor([0.0, 1.0, -1.0], dtype=DT)
    enumerate_expectation(lambda b: w * b.sum(-1) ** 2, Bernoulli(logits=theta)).backward()
    p = torch.sigmoid(theta)
    expected = (p * (1 - p)).sum() + p.sum() ** 2  # E[(sum b)^2] = Var + mean^2
    torch.testing.assert_close(w.grad, expected)


def test_errors() -> None:
    with pytest.raises(ValueError, match="max_configurations"):
        enumerate_expectation(lambda b: b.sum(-1), Bernoulli(logits=torch.zeros(20)))
    with pytest.raises(ValueError, match="2\\^13 = 8192"):
        enumerate_expectation(
            lambda b: b.sum(-1), Bernoulli(logits=torch.zeros(13)), max_configurations=4096
        )
    with pytest.raises(ValueError, match="Normal has no finite support"):
        enumerate_expectation(lambda x: x, Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="dist"):
        enumerate_expectation(lambda x: x, torch.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="f: expected f"):
        enumerate_expectation(lambda b: b.sum(), Bernoulli(logits=torch.zeros(3)))
