"""Tests for the sequence-level surrogate: known answers, hand gradients, masks, clipping, KL."""

from __future__ import annotations

import math

import pytest
import torch

from logtrick.language.sequence import sequence_surrogate
from logtrick.language.tokens import token_log_probs

torch.set_num_threads(1)

REDUCTIONS = ("sequence_sum", "sequence_mean", "token_mean", "constant")


def _batch(
    seed: int, b: int = 4, length: int = 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(b, length, generator=g, dtype=torch.float64) * 3 - 3  # <= 0 with noise
    mask = torch.rand(b, length, generator=g) < 0.7
    mask[0] = True  # a full sequence
    mask[1] = False  # an empty one
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    return lp.requires_grad_(), mask, adv


def _weight(
    mask: torch.Tensor, reduction: str, constant: float | None = None
) -> float | torch.Tensor:
    """The factor the reduction puts on each valid token's term (``(B, 1)`` for sequence_mean)."""
    b, length = mask.shape
    if reduction == "sequence_sum":
        return 1.0 / b
    if reduction == "sequence_mean":
        return 1.0 / (b * mask.sum(1, keepdim=True).clamp_min(1).double())
    if reduction == "token_mean":
        return 1.0 / max(int(mask.sum()), 1)
    return 1.0 / (b * (length if constant is None else constant))


# ---------------------------------------------------------------- known answers and gradients


def test_known_answer_values_for_each_reduction() -> None:
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv = torch.tensor([2.0, -1.0])
    # ratio = 1 on-policy: per-token loss -A; sums per sequence -6 (3 tokens) and +1 (1 token)
    expected = {
        "sequence_sum": -2.5,
        "sequence_mean": (-6.0 / 3 + 1.0 / 1) / 2,
        "token_mean": -5.0 / 4,
        "constant": -5.0 / 2 / 3,
    }
    for reduction, value in expected.items():
        loss, info = sequence_surrogate(lp, mask, adv, reduction=reduction)
        assert loss.item() == pytest.approx(value, rel=1e-6), reduction
        assert loss.item() == pytest.approx(value, rel=1e-6)
        assert int(info["tokens"]) == 4 and float(info["ratio_mean"]) == 1.0
        assert float(info["clip_fraction"]) == 0.0 and float(info["kl"]) == 0.0
    loss, _ = sequence_surrogate(lp, mask, adv, reduction="constant", constant=10.0)
    assert loss.item() == pytest.approx(-5.0 / 2 / 10, rel=1e-6)


def test_known_answer_clipped_ratio() -> None:
    old = torch.full((1, 4), -1.0)  # log-probabilities are <= 0; the ratios are as written
    lp = (torch.log(torch.tensor([[1.5, 0.5, 1.5, 1.1]])) - 1.0).requires_grad_()
    adv = torch.tensor([1.0])
    loss, info = sequence_surrogate(
        lp,
        torch.ones(1, 4, dtype=torch.bool),
        adv,
        "token_mean",
        old_token_log_probs=old,
        clip_eps=0.2,
    )
    # A > 0: min(1.5, 1.2) = 1.2 (clipped), min(0.5, 0.8) = 0.5, 1.2 (clipped), 1.1
    assert loss.item() == pytest.approx(-(1.2 + 0.5 + 1.2 + 1.1) / 4, rel=1e-6)
    assert float(info["clip_fraction"]) == 0.75  # |rho - 1| > 0.2 for 1.5, 0.5, 1.5
    assert float(info["ratio_mean"]) == pytest.approx((1.5 + 0.5 + 1.5 + 1.1) / 4, rel=1e-6)
    loss, info = sequence_surrogate(
        lp,
        torch.ones(1, 4, dtype=torch.bool),
        -adv,
        "token_mean",
        old_token_log_probs=old,
        clip_eps=0.2,
    )
    # A < 0: min(-1.5, -1.2) = -1.5, min(-0.5, -0.8) = -0.8 (clipped), -1.5, -1.1
    assert loss.item() == pytest.approx((1.5 + 0.8 + 1.5 + 1.1) / 4, rel=1e-6)
    assert float(info["clip_fraction"]) == 0.75
    torch.testing.assert_close(info["policy_loss"], loss.detach())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_equals_hand_formula(reduction: str, seed: int) -> None:
    lp, mask, adv = _batch(seed)
    loss, _ = sequence_surrogate(lp, mask, adv, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, lp)
    expected = -adv[:, None] * mask * _weight(mask, reduction)  # -A * d log pi, reduced
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    old = lp.detach() + 0.3 * torch.randn(
        lp.shape, generator=torch.Generator().manual_seed(seed), dtype=lp.dtype
    )
    loss, _ = sequence_surrogate(lp, mask, adv, reduction=reduction, old_token_log_probs=old)
    (grad,) = torch.autograd.grad(loss, lp)
    ratio = (lp.detach() - old).exp()
    torch.testing.assert_close(grad, expected * ratio, rtol=1e-12, atol=1e-12)


def test_sequence_score_is_sum_of_token_scores() -> None:
    # a tiny autoregressive model: logits depend on the previous token; gradient w.r.t. its
    # parameters equals -(1/B) sum_b A_b grad log pi(y_b) of the whole sequence
    g = torch.Generator().manual_seed(3)
    v, b, length = 5, 6, 4
    table = torch.randn(v + 1, v, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, v, (b, length), generator=g)
    prev = torch.cat([torch.full((b, 1), v), y[:, :-1]], 1)
    token_lp = table[prev].log_softmax(-1).gather(-1, y[..., None]).squeeze(-1)
    mask = torch.arange(length)[None, :] < torch.tensor([4, 2, 3, 1, 4, 4])[:, None]
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    loss, _ = sequence_surrogate(token_lp, mask, adv)
    (ours,) = torch.autograd.grad(loss, table, retain_graph=True)
    seq_lp = [token_lp[i, : int(mask[i].sum())].sum() for i in range(b)]
    reinforce = -sum(a * s for a, s in zip(adv, seq_lp)) / b
    (expected,) = torch.autograd.grad(reinforce, table)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_tokens_contribute_nothing(reduction: str) -> None:
    lp, mask, adv = _batch(5)
    g = torch.Generator().manual_seed(6)
    old = lp.detach() + 0.4 * torch.randn(lp.shape, generator=g, dtype=lp.dtype)
    ref = lp.detach() - torch.rand(lp.shape, generator=g, dtype=lp.dtype)
    kw = {"reduction": reduction, "clip_eps": 0.2, "kl_coef": 0.1}

    def run(lp_: torch.Tensor, old_: torch.Tensor, ref_: torch.Tensor) -> tuple:
        x = lp_.detach().clone().requires_grad_()
        loss, info = sequence_surrogate(
            x, mask, adv, old_token_log_probs=old_, ref_token_log_probs=ref_, **kw
        )
        (grad,) = torch.autograd.grad(loss, x)
        return loss, info, grad

    loss, info, grad = run(lp, old, ref)
    assert torch.equal(grad[~mask], torch.zeros(int((~mask).sum()), dtype=grad.dtype))
    for junk in (-50.0, 7.0, math.nan, -math.inf):
        changed = [t.detach().clone() for t in (lp, old, ref)]
        for t in changed:
            t[~mask] = junk
        loss2, info2, grad2 = run(*changed)
        assert torch.equal(loss2, loss) and torch.equal(grad2, grad)
        assert all(torch.equal(info[key], info2[key]) for key in info)


@pytest.mark.parametrize("kl_in_reward", [False, True])
def test_nonleaf_input_masked_nan_gets_exactly_zero_gradient(kl_in_reward: bool) -> None:
    # a non-leaf input whose masked entries are NaN/inf: its gradient is 0 there, never NaN
    lp, mask, adv = _batch(7)
    junk = torch.tensor([math.nan, math.inf, -math.inf], dtype=lp.dtype)
    fill = junk[torch.arange(int((~mask).sum())) % 3]
    kw = {"clip_eps": 0.2, "kl_coef": 0.1, "kl_in_reward": kl_in_reward}
    for reduction in REDUCTIONS:
        base = lp.detach().clone().requires_grad_()
        x = base * 1.0  # non-leaf
        x = x.masked_scatter(~mask, fill)
        old = (lp.detach() + 0.3).masked_scatter(~mask, fill)
        ref = (lp.detach() - 0.5).masked_scatter(~mask, fill)
        loss, info = sequence_surrogate(
            x, mask, adv, reduction, old_token_log_probs=old, ref_token_log_probs=ref, **kw
        )
        (grad,) = torch.autograd.grad(loss, base)
        assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask])), reduction
        assert grad.isfinite().all() and loss.isfinite()
        assert all(bool(v.isfinite().all()) for v in info.values())


def test_masked_positions_upstream_get_finite_gradient_through_token_log_probs() -> None:
    """Defect 12 of issue 11: the docstring promised NaN-safety that an upstream graph breaks.

    Padded positions of a model's logits often hold -inf (or NaN) and padding ids out of the
    vocabulary. ``log_softmax(...).gather(...)`` turns a row of -inf into NaN, and its backward
    multiplies the zero gradient from ``sequence_surrogate`` by NaN: the model's gradient is NaN.
    ``token_log_probs`` never evaluates masked positions, so the gradient stays finite and equals
    the one computed from the valid positions alone.
    """
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False], [True] * 4])
    tokens = torch.tensor([[1, 2, 3, -100], [0, 4, -100, -100], [4, 3, 2, 1]])
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    padded_nan = torch.zeros_like(mask)
    padded_nan[0, 3] = True  # one padded position holds NaN logits, the others -inf

    def logits_of_model() -> torch.Tensor:  # an additive mask, as attention masks are applied
        additive = torch.where(mask, 0.0, -math.inf).masked_fill(padded_nan, math.nan)
        return hidden @ weight + additive[..., None].double()

    for reduction in REDUCTIONS:
        lp = token_log_probs(logits_of_model(), tokens, mask)
        loss, _ = sequence_surrogate(lp, mask, adv, reduction)
        (grad,) = torch.autograd.grad(loss, weight)
        assert grad.isfinite().all(), reduction
        valid = (hidden[mask] @ weight).log_softmax(-1).gather(-1, tokens[mask][:, None])[:, 0]
        expected_lp = torch.zeros(3, 4, dtype=torch.float64).masked_scatter(mask, valid)
        expected, _ = sequence_surrogate(expected_lp, mask, adv, reduction)
        torch.testing.assert_close(grad, torch.autograd.grad(expected, weight)[0])
    naive = logits_of_model().log_softmax(-1).gather(-1, tokens.clamp_min(0)[..., None])[..., 0]
    loss, _ = sequence_surrogate(naive, mask, adv)
    assert torch.autograd.grad(loss, weight)[0].isnan().any()  # why the docstring says so


def test_empty_batch_of_tokens_gives_zero() -> None:
    lp = torch.randn(2, 3, requires_grad=True)
    for reduction in REDUCTIONS:
        loss, info = sequence_surrogate(
            lp, torch.zeros(2, 3, dtype=torch.bool), torch.ones(2), reduction
        )
        assert loss.item() == 0.0 and int(info["tokens"]) == 0
        (grad,) = torch.autograd.grad(loss, lp)
        assert torch.equal(grad, torch.zeros(2, 3))


# ---------------------------------------------------------------- clipping against a loop


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clipping_matches_loop(reduction: str, seed: int) -> None:
    lp, mask, adv = _batch(seed, b=5, length=7)
    g = torch.Generator().manual_seed(100 + seed)
    old = lp.detach() + 0.5 * torch.randn(lp.shape, generator=g, dtype=lp.dtype)
    eps, w = 0.2, _weight(mask, reduction)
    loss, info = sequence_surrogate(lp, mask, adv, reduction, old_token_log_probs=old, clip_eps=eps)
    (grad,) = torch.autograd.grad(loss, lp)
    total, n_clipped, exp_grad = 0.0, 0, torch.zeros_like(grad)
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if not mask[i, t]:
                continue
            rho, a = math.exp(float(lp.detach()[i, t] - old[i, t])), float(adv[i])
            wi = float(w[i]) if isinstance(w, torch.Tensor) else w
            unclipped, clipped = rho * a, min(max(rho, 1 - eps), 1 + eps) * a
            total -= min(unclipped, clipped) * wi
            n_clipped += abs(rho - 1) > eps
            if clipped >= unclipped:
                exp_grad[i, t] = -a * rho * wi  # d(rho A)/d log pi = rho A
    assert loss.item() == pytest.approx(total, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(grad, exp_grad, rtol=1e-12, atol=1e-12)
    assert float(info["clip_fraction"]) == pytest.approx(n_clipped / int(mask.sum()))


def test_clip_is_inactive_on_policy() -> None:
    lp, mask, adv = _batch(9)
    plain, _ = sequence_surrogate(lp, mask, adv)
    clipped, info = sequence_surrogate(lp, mask, adv, clip_eps=0.1)
    assert torch.equal(plain, clipped) and float(info["clip_fraction"]) == 0.0


# ---------------------------------------------------------------- KL penalty


def _hand_kl(estimator: str, x: float) -> tuple[float, float]:
    """Per-token k and its derivative in log pi, at x = log(pi_ref / pi)."""
    if estimator == "k1":
        return -x, 1.0
    if estimator == "k2":
        return 0.5 * x * x, -x
    return math.exp(x) - x - 1, 1.0 - math.exp(x)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_values_and_gradient_match_hand(estimator: str) -> None:
    lp, mask, _ = _batch(4)
    ref = lp.detach() + torch.randn(
        lp.shape, generator=torch.Generator().manual_seed(8), dtype=lp.dtype
    )
    beta = 0.3
    zero = torch.zeros(4, dtype=lp.dtype)
    kw = {"ref_token_log_probs": ref, "kl_coef": beta, "kl_estimator": estimator}
    loss, info = sequence_surrogate(lp, mask, zero, "token_mean", **kw)
    (grad,) = torch.autograd.grad(loss, lp)
    kl, d_kl = [], torch.zeros_like(grad)
    for i, t in mask.nonzero().tolist():
        k, dk = _hand_kl(estimator, float(ref[i, t] - lp.detach()[i, t]))
        kl.append(k)
        d_kl[i, t] = dk
    n = len(kl)
    assert float(info["kl"]) == pytest.approx(sum(kl) / n, rel=1e-12)
    assert loss.item() == pytest.approx(beta * sum(kl) / n, rel=1e-12)
    assert float(info["policy_loss"]) == 0.0  # zero advantages: only the KL term is left
    torch.testing.assert_close(grad, beta * d_kl / n, rtol=1e-12, atol=1e-12)


def test_kl_estimators_known_values_and_expectations() -> None:
    """k1, k2, k3 against closed forms: per-token values, and expectations by enumeration.

    Under pi, E[k1] = E[k3] = KL(pi || ref) and E[k2] = E[x^2] / 2; as loss terms their mean
    gradients are 0 (k1), grad KL(pi || ref) (k2) and grad KL(ref || pi) (k3). Each estimator
    is evaluated through ``sequence_surrogate`` (one length-1 sequence per category).
    """
    ln2 = math.log(2.0)
    known = {  # x = log(pi_ref / pi) -> (k1, k2, k3)
        0.0: (0.0, 0.0, 0.0),
        ln2: (-ln2, ln2**2 / 2, 1.0 - ln2),
        -ln2: (ln2, ln2**2 / 2, ln2 - 0.5),
        -30.0: (30.0, 450.0, math.exp(-20.0) + 20.0 - 1.0),  # k3 clamped at x = -20
    }
    one = torch.ones(1, 1, dtype=torch.bool)
    for x, values in known.items():
        for estimator, value in zip(("k1", "k2", "k3"), values):
            lp = torch.full((1, 1), -2.0, dtype=torch.float64)
            kw = {"ref_token_log_probs": lp + x, "kl_coef": 1.0, "kl_estimator": estimator}
            loss, _ = sequence_surrogate(lp, one, torch.zeros(1, dtype=torch.float64), **kw)
            assert loss.item() == pytest.approx(value, rel=1e-12, abs=1e-12), (estimator, x)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(5, generator=g, dtype=torch.float64).log_softmax(0)
    logp = theta.log_softmax(0)
    p = logp.exp().detach()  # enumeration weights: the expectation under pi
    mask = torch.ones(5, 1, dtype=torch.bool)
    forward = (p * (logp - ref)).sum()  # KL(pi || ref)
    kl_forward = (logp.exp() * (logp - ref)).sum()
    (d_forward,) = torch.autograd.grad(kl_forward, theta, retain_graph=True)
    (d_reverse,) = torch.autograd.grad((ref.exp() * (ref - logp)).sum(), theta, retain_graph=True)
    expected = {
        "k1": (forward, torch.zeros(5, dtype=torch.float64)),
        "k2": (0.5 * (p * (logp - ref).pow(2)).sum(), d_forward),
        "k3": (forward, d_reverse),
    }
    for estimator, (value, grad) in expected.items():
        weights = torch.zeros(5, dtype=torch.float64)  # advantages 0; weight by pi via kl_coef
        mean, total_grad = 0.0, torch.zeros(5, dtype=torch.float64)
        for y in range(5):  # E_pi[k] = sum_y pi(y) k(y): one call per category
            kw = {"ref_token_log_probs": ref[y].reshape(1, 1), "kl_coef": float(p[y])}
            kw["kl_estimator"] = estimator
            loss, _ = sequence_surrogate(logp[y].reshape(1, 1), mask[:1], weights[:1], **kw)
            mean += loss.item()
            total_grad += torch.autograd.grad(loss, theta, retain_graph=True)[0]
        assert mean == pytest.approx(float(value.detach()), rel=1e-10), estimator
        torch.testing.assert_close(total_grad, grad, rtol=1e-10, atol=1e-12)
    assert float(expected["k2"][0].detach()) != pytest.approx(float(forward.detach()), rel=1e-3)


def test_kl_in_reward_matches_hand() -> None:
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -9.0, -9.0]], dtype=torch.float64)
    lp.requires_grad_()
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, math.nan, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv, beta = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    kw = {"ref_token_log_probs": ref, "kl_coef": beta, "kl_estimator": "k1", "kl_in_reward": True}
    loss, info = sequence_surrogate(lp, mask, adv, "sequence_sum", **kw)
    (grad,) = torch.autograd.grad(loss, lp)
    # k1 = log pi - log pi_ref: row 0 (0.5, -1.0, 0.0), row 1 (-0.2); rewards-to-go
    # row 0: 0.5 - 1 + 0 = -0.5, -1.0, 0.0 -> A_t = 1 - beta * that = 1.25, 1.5, 1.0
    # row 1: -0.2 -> A_t = -2 + 0.1 = -1.9
    token_adv = torch.tensor([[1.25, 1.5, 1.0], [-1.9, 0.0, 0.0]], dtype=torch.float64)
    assert loss.item() == pytest.approx(-(1.25 + 1.5 + 1.0 - 1.9) / 2, rel=1e-12)
    torch.testing.assert_close(grad, -token_adv / 2, rtol=1e-12, atol=1e-12)
    assert float(info["kl"]) == pytest.approx((0.5 - 1.0 + 0.0 - 0.2) / 4, rel=1e-12)
    same, _ = sequence_surrogate(lp, mask, token_adv, "sequence_sum")  # per-token advantages
    torch.testing.assert_close(same, loss)
    plain, _ = sequence_surrogate(lp, mask, adv, "sequence_sum", **{**kw, "kl_coef": 0.0})
    assert plain.item() == pytest.approx(-(3 * 1.0 - 2.0) / 2, rel=1e-12)


def test_kl_only_reported_when_coefficient_is_zero() -> None:
    lp, mask, adv = _batch(2)
    ref = lp.detach() - 1.0
    plain, _ = sequence_surrogate(lp, mask, adv)
    loss, info = sequence_surrogate(lp, mask, adv, ref_token_log_probs=ref)
    assert torch.equal(plain, loss) and torch.equal(info["policy_loss"], loss.detach())
    assert float(info["kl"]) == pytest.approx(math.exp(-1.0), rel=1e-12)  # k3 at x = -1


def test_approx_kl_is_k3_of_the_old_to_new_ratio_token_by_token() -> None:
    """``info["approx_kl"]`` = (ρ − 1) − log ρ ≥ 0 for every single token, 0 only at ρ = 1,
    masked tokens (here NaN) left out. One-token batches on a grid of log-ratios of both signs:
    the k1 estimate −log ρ would be negative at every log ρ > 0, and k3 of the reversed ratio
    (ρ⁻¹ − 1 + log ρ) would differ from the value checked here."""
    mask = torch.tensor([[True, False]])
    for log_ratio in torch.linspace(-3.0, 3.0, 13, dtype=torch.float64):
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        lp = torch.stack([log_ratio - 4.0, nan])[None]  # log-probabilities are <= 0
        old = torch.full((1, 2), -4.0, dtype=torch.float64)
        _, info = sequence_surrogate(
            lp, mask, torch.ones(1, dtype=torch.float64), old_token_log_probs=old
        )
        kl, lr = float(info["approx_kl"]), float(log_ratio)
        assert kl >= 0.0 and (kl == 0.0) == (lr == 0.0), (lr, kl)
        assert kl == pytest.approx(math.expm1(lr) - lr, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_kl_and_ratio_do_not_overflow(dtype: torch.dtype) -> None:
    lp = torch.tensor([[-60.0, -1.0], [-2.0, -0.5]], dtype=dtype, requires_grad=True)
    ref = torch.tensor([[-1.0, -60.0], [-2.0, -1.5]], dtype=dtype)
    old = torch.tensor([[-1.0, -1.0], [-40.0, -0.5]], dtype=dtype)
    mask = torch.ones(2, 2, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0], dtype=dtype)
    loss, info = sequence_surrogate(
        lp, mask, adv, "token_mean", old_token_log_probs=old, ref_token_log_probs=ref, kl_coef=0.1
    )
    assert loss.dtype == torch.float32 and loss.isfinite()
    (grad,) = torch.autograd.grad(loss, lp)
    assert grad.dtype == dtype and grad.isfinite().all()
    x = (ref.float() - lp.detach().float()).clamp(-20, 20)
    k3 = (x.exp() - x - 1).mean()
    assert float(info["kl"]) == pytest.approx(float(k3), rel=1e-6)
    assert float(info["kl"]) > 1e8  # exp(20): would be inf in float16
    rho = (lp.detach().float() - old.float()).clamp(-20, 20).exp()
    torch.testing.assert_close(info["ratio_mean"], rho.mean())


# ---------------------------------------------------------------- validation


def test_errors_name_the_argument() -> None:
    lp, mask, adv = _batch(0)
    cases = [
        (ValueError, "advantages", {"advantages": adv.clone().fill_(math.nan)}),
        (ValueError, "advantages", {"advantages": adv[:, None]}),
        (TypeError, "advantages", {"advantages": torch.ones(4, dtype=torch.long)}),
        (ValueError, "mask", {"mask": mask[:, :3]}),
        (TypeError, "mask", {"mask": mask.float()}),
        (ValueError, "token_log_probs", {"token_log_probs": lp.detach()[0]}),
        (TypeError, "token_log_probs", {"token_log_probs": torch.zeros(4, 6, dtype=torch.long)}),
        (ValueError, "token_log_probs", {"token_log_probs": lp.detach().clone().fill_(math.nan)}),
        (ValueError, "old_token_log_probs", {"old_token_log_probs": torch.zeros(4, 5)}),
        (ValueError, "ref_token_log_probs", {"ref_token_log_probs": torch.zeros(3, 6)}),
        (ValueError, "ref_token_log_probs", {"kl_coef": 0.1}),
        (ValueError, "reduction", {"reduction": "mean"}),
        (ValueError, "constant", {"constant": 5.0}),
        (ValueError, "constant", {"reduction": "constant", "constant": 0.0}),
        (ValueError, "clip_eps", {"clip_eps": 0.0}),
        (ValueError, "kl_coef", {"kl_coef": -1.0}),
        (ValueError, "kl_estimator", {"kl_estimator": "k4", "ref_token_log_probs": lp.detach()}),
        (ValueError, "advantages", {"advantages": torch.zeros(4, 5)}),
        (
            ValueError,
            "advantages",
            {"advantages": torch.zeros(4, 6).index_fill_(1, torch.tensor([0]), math.nan)},
        ),
    ]
    for error, name, change in cases:
        kwargs = {"token_log_probs": lp, "mask": mask, "advantages": adv, **change}
        with pytest.raises(error, match=name):
            sequence_surrogate(**kwargs)
