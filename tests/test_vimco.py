"""VIMCO: the bound's value, the hand formula of the learning signals and the gradient, and
unbiasedness of the gradient of the importance-weighted bound against enumeration."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli

from logtrick.enumeration import enumerate_expectation
from logtrick.vimco import vimco_signals, vimco_surrogate

DT = torch.float64


def z_crit(failure_rate: float, checks: int) -> float:
    """Two-sided normal quantile at ``failure_rate`` split over ``checks`` (Bonferroni)."""
    return float(torch.special.ndtri(torch.tensor(1.0 - failure_rate / (2 * checks), dtype=DT)))


def test_value_is_the_importance_weighted_bound() -> None:
    torch.manual_seed(0)
    lw, lq = torch.randn(5, 4, dtype=DT) * 3, torch.randn(5, 4, dtype=DT)
    bound, surrogate = vimco_surrogate(lw, lq)
    expected = (lw.exp().mean(0)).log()
    torch.testing.assert_close(bound, expected)
    torch.testing.assert_close(surrogate.detach(), expected)
    assert bound.shape == surrogate.shape == (4,)


def test_signals_match_hand_formula() -> None:
    a, b, c = 0.5, -1.0, 2.0
    signals = vimco_signals(torch.tensor([a, b, c], dtype=DT))
    bound = math.log((math.exp(a) + math.exp(b) + math.exp(c)) / 3)
    loo = [
        math.log((math.exp((b + c) / 2) + math.exp(b) + math.exp(c)) / 3),
        math.log((math.exp(a) + math.exp((a + c) / 2) + math.exp(c)) / 3),
        math.log((math.exp(a) + math.exp(b) + math.exp((a + b) / 2)) / 3),
    ]
    torch.testing.assert_close(signals, torch.tensor([bound - v for v in loo], dtype=DT))
    # stable in log space: a shift of all log-weights leaves the signals unchanged
    torch.testing.assert_close(vimco_signals(torch.tensor([a, b, c], dtype=DT) + 1000.0), signals)


def test_gradient_matches_hand_formula() -> None:
    phi = torch.tensor(0.7, dtype=DT, requires_grad=True)
    a = torch.tensor([0.3, -1.2, 2.0, 0.5], dtype=DT)  # log q_k = phi * a_k
    c = torch.tensor([1.0, 0.0, -0.5, 0.2], dtype=DT)  # log p(x, h_k)
    log_q = phi * a
    _, surrogate = vimco_surrogate(c - log_q, log_q)
    surrogate.backward()
    with torch.no_grad():
        lw = c - phi * a
        w_norm = torch.softmax(lw, 0)
        expected = (vimco_signals(lw) * a).sum() + (w_norm * -a).sum()
    torch.testing.assert_close(phi.grad, expected)


# a tiny discrete model: two binary latents, p(x, h) a fixed table, q(h) factorised Bernoulli
TABLE = torch.tensor([[-2.0, -0.5], [-1.0, -3.0]], dtype=DT)  # log p(x, h0, h1)
PHI = torch.tensor([0.4, -0.8], dtype=DT)
SAMPLES = 3


def bound_of(h: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k p(x, h_k) / q(h_k) for h of shape ``(..., K, 2)`` -> ``(...)``."""
    log_q = Bernoulli(logits=phi).log_prob(h).sum(-1)
    idx = h.long()
    lw = TABLE[idx[..., 0], idx[..., 1]] - log_q
    return torch.logsumexp(lw, -1) - math.log(h.shape[-2])


def test_gradient_unbiased_against_enumeration() -> None:
    phi = PHI.clone().requires_grad_(True)
    q_k = Bernoulli(logits=phi.expand(SAMPLES, 2))  # K independent draws: 2^6 configurations
    enumerate_expectation(lambda h: bound_of(h, phi), q_k).backward()
    truth = phi.grad
    reps = 40000
    phis = PHI.expand(reps, 2).clone().requires_grad_(True)
    torch.manual_seed(1)
    h = Bernoulli(logits=phis).sample((SAMPLES,))  # (K, reps, 2)
    log_q = Bernoulli(logits=phis).log_prob(h).sum(-1)
    lw = TABLE[h[..., 0].long(), h[..., 1].long()] - log_q
    _, surrogate = vimco_surrogate(lw, log_q)
    surrogate.sum().backward(retain_graph=True)
    g = phis.grad.clone()
    z = (g.mean(0) - truth) / (g.std(0) / reps**0.5)
    assert (z.abs() <= z_crit(1e-3, 2)).all(), z  # 2 checks, total failure rate 1e-3
    # the plain estimator on the same samples: learning signal = the bound itself
    bound = torch.logsumexp(lw, 0) - math.log(SAMPLES)
    plain_surrogate = bound + bound.detach() * (log_q - log_q.detach()).sum(0)
    (plain,) = torch.autograd.grad(plain_surrogate.sum(), phis)
    z_plain = (plain.mean(0) - truth) / (plain.std(0) / reps**0.5)
    print(f"VIMCO / plain score-function variance: {(g.var(0) / plain.var(0)).tolist()}")
    print(f"z-scores: VIMCO {z.tolist()}, plain {z_plain.tolist()}")


def test_errors() -> None:
    with pytest.raises(ValueError, match="K >= 2"):
        vimco_surrogate(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="log_q"):
        vimco_surrogate(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        vimco_surrogate(torch.tensor([0.0, float("nan")]), torch.zeros(2))
    with pytest.raises(TypeError, match="log_weights"):
        vimco_signals([0.0, 1.0])  # type: ignore[arg-type]
