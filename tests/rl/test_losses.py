"""Tests of the policy-gradient losses: known answers, hand-derived gradients, bad input."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

import logtrick as lt
from logtrick.rl.losses import (
    entropy_bonus,
    explained_variance,
    masked_mean,
    normalize_advantages,
    ppo_clip_loss,
    reinforce_loss,
    value_loss,
)

torch.set_num_threads(1)
f64 = torch.float64


def _z(failure_rate: float, checks: int = 1) -> float:
    """Two-sided normal quantile for a total failure rate, Bonferroni over ``checks``."""
    return NormalDist().inv_cdf(1.0 - failure_rate / (2 * checks))


# ------------------------------------------------------------------------------- masked_mean


def test_masked_mean_known_answer_ignores_nan_in_masked_entries() -> None:
    x = torch.tensor([[1.0, float("nan")], [3.0, 5.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_mean(torch.tensor([1.0, 2.0, 6.0])).item() == pytest.approx(3.0)


def test_masked_mean_all_masked_is_zero_with_zero_gradient() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    out = masked_mean(x, torch.zeros(2, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(x.grad, torch.zeros(2))


# ----------------------------------------------------------------------------- reinforce_loss


def test_reinforce_loss_known_answer_and_mask() -> None:
    """Value: the negative mean return (the surrogate's value is its cost); gradient with
    respect to log π: −(G − b)/N on valid entries, 0 elsewhere."""
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    returns = torch.tensor([[2.0, 1.0], [-4.0, 100.0]])
    baseline = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss, info = reinforce_loss(log_probs, returns, mask, baseline=baseline)
    assert loss.item() == pytest.approx(-(2.0 + 1.0 - 4.0) / 3)
    assert info["policy_loss"].item() == pytest.approx(loss.item())
    loss.backward()
    expected = torch.tensor([[-1.5, -0.5], [5.0, 0.0]]) / 3
    torch.testing.assert_close(log_probs.grad, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_loss_is_the_cores_surrogate(seed: int) -> None:
    """Value and gradient equal ``lt.surrogate(−G, log π, baseline=−b).mean()``."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(5, 3, generator=g, dtype=f64, requires_grad=True)
    returns, baseline = torch.randn(2, 5, 3, generator=g, dtype=f64)
    log_probs = torch.nn.functional.logsigmoid(theta)
    loss, _ = reinforce_loss(log_probs, returns, baseline=baseline)
    core = lt.surrogate(-returns, log_probs, baseline=-baseline).mean()
    assert loss.item() == core.item()
    grad = torch.autograd.grad(loss, theta, retain_graph=True)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(core, theta)[0], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_gradient_equals_hand_formula(seed: int) -> None:
    """Linear-softmax policy: ∇log π(a|s) = s ⊗ (e_a − π(·|s)); loss grad = −mean(Â ∇log π)."""
    g = torch.Generator().manual_seed(seed)
    T, B, d, n_a = 4, 3, 5, 3
    states = torch.randn(T, B, d, generator=g, dtype=f64)
    W = torch.randn(d, n_a, generator=g, dtype=f64, requires_grad=True)
    actions = torch.randint(n_a, (T, B), generator=g)
    adv = torch.randn(T, B, generator=g, dtype=f64)
    mask = torch.rand(T, B, generator=g) < 0.7
    mask[0, 0] = True
    log_probs = Categorical(logits=states @ W).log_prob(actions)
    loss, _ = reinforce_loss(log_probs, adv, mask)
    loss.backward()

    probs = torch.softmax(states @ W.detach(), -1)
    scores = (
        states[..., :, None] * (torch.nn.functional.one_hot(actions, n_a) - probs)[..., None, :]
    )
    weights = (adv * mask) / mask.sum()
    expected = -(weights[..., None, None] * scores).sum((0, 1))
    torch.testing.assert_close(W.grad, expected, rtol=1e-12, atol=1e-12)


def test_reinforce_detaches_advantages() -> None:
    log_probs = torch.zeros(3, requires_grad=True)
    adv = torch.ones(3, requires_grad=True)
    loss, _ = reinforce_loss(log_probs, adv)
    loss.backward()
    assert adv.grad is None
    assert torch.allclose(log_probs.grad, torch.full((3,), -1.0 / 3))


# ------------------------------------------------------------------------------ ppo_clip_loss


@pytest.mark.parametrize(
    ("sign", "expected_loss", "active"),
    [
        # A = +1: min(r, clip r) = [0.5, 1.0, 1.2]; the clip binds (zero gradient) at r = 1.5.
        (1.0, -(0.5 + 1.0 + 1.2) / 3, [True, True, False]),
        # A = -1: min(-r, -clip r) = [-0.8, -1.0, -1.5]; the clip binds at r = 0.5.
        (-1.0, (0.8 + 1.0 + 1.5) / 3, [False, True, True]),
    ],
)
def test_ppo_clip_known_answer_both_sides(sign: float, expected_loss: float, active: list) -> None:
    ratio = torch.tensor([0.5, 1.0, 1.5], dtype=f64)
    old = torch.tensor([-1.0, -2.0, -0.3], dtype=f64)
    log_probs = (old + ratio.log()).requires_grad_(True)
    adv = torch.full((3,), sign, dtype=f64)
    loss, info = ppo_clip_loss(log_probs, old, adv, clip_eps=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss)
    # d loss / d log π_i = −A_i r_i / 3 where the unclipped branch is active, else 0.
    expected_grad = torch.where(torch.tensor(active), -sign * ratio / 3, torch.zeros(3, dtype=f64))
    torch.testing.assert_close(log_probs.grad, expected_grad)
    assert info["clip_fraction"].item() == pytest.approx(2 / 3)
    assert info["ratio_mean"].item() == pytest.approx(1.0)
    k3 = ((ratio - 1) - ratio.log()).mean()
    assert info["approx_kl"].item() == pytest.approx(k3.item())


def test_ppo_clip_mask_excludes_entries() -> None:
    old = torch.zeros(4)
    log_probs = torch.tensor([0.0, 0.0, 5.0, float("nan")])
    adv = torch.tensor([1.0, 3.0, 1.0, float("nan")])
    mask = torch.tensor([True, True, False, False])
    loss, info = ppo_clip_loss(log_probs, old, adv, 0.2, mask)
    assert loss.item() == pytest.approx(-2.0)
    assert info["clip_fraction"].item() == 0.0
    assert info["approx_kl"].item() == 0.0


def test_ppo_gradient_at_old_policy_equals_reinforce_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(6, 4, generator=g, dtype=f64, requires_grad=True)
    adv = torch.randn(6, 4, generator=g, dtype=f64)
    log_probs = torch.nn.functional.logsigmoid(theta)
    ppo, _ = ppo_clip_loss(log_probs, log_probs.detach(), adv, 0.2)
    grad_ppo = torch.autograd.grad(ppo, theta, retain_graph=True)[0]
    rf, _ = reinforce_loss(log_probs, adv)
    torch.testing.assert_close(grad_ppo, torch.autograd.grad(rf, theta)[0])


def test_approx_kl_is_nonnegative_term_by_term() -> None:
    """k3 = (r − 1) − log r ≥ 0 for every single transition, = 0 only at r = 1, and masked
    entries (here NaN) are left out. One-transition batches on a grid of log-ratios of both
    signs: the k1 estimator −log r would be negative at every log r > 0, k3 of the reversed
    ratio would differ from the value checked here."""
    for log_ratio in torch.linspace(-3.0, 3.0, 13, dtype=f64):
        new = torch.stack([log_ratio, torch.tensor(float("nan"), dtype=f64)])
        mask = torch.tensor([True, False])
        _, info = ppo_clip_loss(new, torch.zeros(2, dtype=f64), torch.ones(2, dtype=f64), 0.2, mask)
        kl = info["approx_kl"].item()
        assert kl >= 0.0 and (kl == 0.0) == (log_ratio.item() == 0.0), (log_ratio, kl)
        assert kl == pytest.approx(math.expm1(log_ratio.item()) - log_ratio.item(), rel=1e-12)


@pytest.mark.parametrize("family", ["categorical", "normal"])
def test_approx_kl_estimates_true_kl(family: str) -> None:
    """k3 with a ~ π_old is unbiased for KL(π_old ‖ π): |mean − KL| ≤ z σ̂/√N.

    Failure rate 1e-6 for the two families together (Bonferroni over 2 checks).
    """
    torch.manual_seed(5)
    if family == "categorical":
        old = Categorical(probs=torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=f64))
        new = Categorical(probs=torch.tensor([0.25, 0.25, 0.3, 0.2], dtype=f64))
    else:
        old = Normal(torch.tensor(0.0, dtype=f64), torch.tensor(1.0, dtype=f64))
        new = Normal(torch.tensor(0.3, dtype=f64), torch.tensor(1.2, dtype=f64))
    N = 20_000
    a = old.sample((N,))
    log_old, log_new = old.log_prob(a), new.log_prob(a)
    _, info = ppo_clip_loss(log_new, log_old, torch.ones(N, dtype=f64), 0.2)
    r = (log_new - log_old).exp()
    k3 = (r - 1) - (log_new - log_old)
    truth = kl_divergence(old, new).item()
    tol = _z(1e-6, checks=2) * k3.std().item() / N**0.5
    assert abs(info["approx_kl"].item() - truth) <= tol
    assert truth > 5 * tol  # the check has power: the KL is resolved, not just "small"


# --------------------------------------------------------------------------------- value_loss


def test_value_loss_plain_and_masked() -> None:
    values = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    returns = torch.tensor([0.0, 2.0, 0.0])
    loss, info = value_loss(values, returns, mask=torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.0) / 2)
    assert info["value_loss"].item() == pytest.approx(loss.item())
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.5, 0.0, 0.0]))


def test_value_clipping_known_answers() -> None:
    old = torch.tensor([1.0, 1.0, 1.0])
    values = torch.tensor([2.0, 2.0, 1.2], requires_grad=True)
    returns = torch.tensor([3.0, 0.0, 3.0])
    loss, info = value_loss(values, returns, old_values=old, clip_eps=0.5)
    # entry 0: unclipped (2−3)² = 1, clipped (1.5−3)² = 2.25 → 2.25, gradient 0 (clip binds)
    # entry 1: unclipped (2−0)² = 4, clipped 1.5² = 2.25 → 4, gradient (v − G) = 2
    # entry 2: inside the clip range, both 1.8² = 3.24, gradient −1.8
    assert loss.item() == pytest.approx(0.5 * (2.25 + 4.0 + 3.24) / 3)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([0.0, 2.0, -1.8]) / 3)
    assert info["value_clip_fraction"].item() == pytest.approx(2 / 3)


def test_value_clipping_wide_eps_equals_unclipped() -> None:
    g = torch.Generator().manual_seed(6)
    values, returns, old = torch.randn(3, 5, 4, generator=g)
    a, _ = value_loss(values, returns, old_values=old, clip_eps=100.0)
    b, _ = value_loss(values, returns, old_values=old)  # old_values ignored without clip_eps
    assert a.item() == pytest.approx(b.item())


# ----------------------------------------------------------------- entropy, EV, normalisation


def test_entropy_bonus_masked_mean() -> None:
    ent = torch.tensor([[1.0, 2.0], [3.0, 10.0]])
    assert entropy_bonus(ent).item() == pytest.approx(4.0)
    mask = torch.tensor([[True, True], [True, False]])
    assert entropy_bonus(ent, mask).item() == pytest.approx(2.0)


def test_explained_variance_known_answers() -> None:
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), target).item() == pytest.approx(0.0)
    # residual [1, 0, 1, 0] − 0.5 has variance 0.25; Var[target] = 1.25
    pred = target - torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert explained_variance(pred, target).item() == pytest.approx(1 - 0.25 / 1.25)
    assert torch.isnan(explained_variance(target, torch.ones(4)))
    mask = torch.tensor([True, True, True, False])
    bad = torch.tensor([1.0, 2.0, 3.0, -100.0])
    assert explained_variance(bad, target, mask).item() == pytest.approx(1.0)


def test_normalize_advantages_masked() -> None:
    g = torch.Generator().manual_seed(7)
    adv = 3.0 + 2.0 * torch.randn(8, 4, generator=g, dtype=f64)
    mask = torch.rand(8, 4, generator=g) < 0.6
    adv[~mask] = float("nan")
    out = normalize_advantages(adv, mask)
    valid = out[mask]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert valid.std().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(out[~mask], torch.zeros(int((~mask).sum()), dtype=f64))
    full = normalize_advantages(adv[mask])
    torch.testing.assert_close(full, valid)


# ---------------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_the_argument() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"returns: expected the shape of log_probs \(4, 2\)"):
        reinforce_loss(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"baseline: expected the shape of log_probs"):
        reinforce_loss(x, x, baseline=torch.zeros(4))
    with pytest.raises(ValueError, match="old_log_probs"):
        ppo_clip_loss(x, torch.zeros(2, 4), x, 0.2)
    with pytest.raises(ValueError, match="returns"):
        value_loss(x, torch.zeros(4))
    with pytest.raises(ValueError, match="old_values"):
        value_loss(x, x, old_values=torch.zeros(3), clip_eps=0.2)
    with pytest.raises(ValueError, match="mask"):
        masked_mean(x, torch.ones(4, dtype=torch.bool))


def test_nan_advantages_and_returns_are_errors() -> None:
    x = torch.zeros(3)
    bad = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match=r"returns: 1 of 3 entries are NaN or inf .*index \(1,\)"):
        reinforce_loss(x, bad)
    with pytest.raises(ValueError, match="baseline: 1 of 3"):
        reinforce_loss(x, x, baseline=bad)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(x, x, torch.tensor([float("inf"), 0.0, 0.0]), 0.2)
    with pytest.raises(ValueError, match="returns"):
        value_loss(x, bad)
    with pytest.raises(ValueError, match="adv"):
        normalize_advantages(bad)


def test_bad_options_are_errors() -> None:
    x = torch.zeros(3)
    with pytest.raises(TypeError, match="mask: expected a bool tensor"):
        reinforce_loss(x, x, torch.ones(3))
    with pytest.raises(TypeError, match="returns: expected a Tensor"):
        reinforce_loss(x, [0.0, 0.0, 0.0])
    for eps in (0.0, -0.1, None):
        with pytest.raises(ValueError, match="clip_eps"):
            ppo_clip_loss(x, x, x, eps)
    with pytest.raises(ValueError, match="old_values: clipping"):
        value_loss(x, x, clip_eps=0.2)
