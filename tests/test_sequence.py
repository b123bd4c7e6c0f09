"""Tests for the sequence-level surrogate: known answers, hand gradients, masks, clipping, KL."""

from __future__ import annotations

import math

import pytest
import torch

from logtrick.sequence import sequence_surrogate

torch.set_num_threads(1)

REDUCTIONS = ("sequence_sum", "token_mean", "constant")


def _batch(
    seed: int, b: int = 4, length: int = 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(b, length, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(b, length, generator=g) < 0.7
    mask[0] = True  # a full sequence
    mask[1] = False  # an empty one
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    return lp.requires_grad_(), mask, adv


def _weight(mask: torch.Tensor, reduction: str, constant: float | None = None) -> float:
    """The factor the reduction puts on each valid token's term."""
    b, length = mask.shape
    if reduction == "sequence_sum":
        return 1.0 / b
    if reduction == "token_mean":
        return 1.0 / max(int(mask.sum()), 1)
    return 1.0 / (b * (length if constant is None else constant))


# ---------------------------------------------------------------- known answers and gradients


def test_known_answer_values_for_each_reduction() -> None:
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv = torch.tensor([2.0, -1.0])
    # ratio = 1 on-policy: per-token loss -A; sums per sequence -6 and +1 over 4 tokens
    expected = {"sequence_sum": -2.5, "token_mean": -5.0 / 4, "constant": -5.0 / 2 / 3}
    for reduction, value in expected.items():
        loss, info = sequence_surrogate(lp, mask, adv, reduction=reduction)
        assert loss.item() == pytest.approx(value, rel=1e-6)
        assert int(info["tokens"]) == 4 and float(info["ratio_mean"]) == 1.0
        assert float(info["clip_fraction"]) == 0.0 and float(info["kl"]) == 0.0
    loss, _ = sequence_surrogate(lp, mask, adv, reduction="constant", constant=10.0)
    assert loss.item() == pytest.approx(-5.0 / 2 / 10, rel=1e-6)


def test_known_answer_clipped_ratio() -> None:
    old = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 1.1]])).requires_grad_()
    adv = torch.tensor([1.0])
    loss, info = sequence_surrogate(lp, torch.ones(1, 4, dtype=torch.bool), adv, "token_mean",
                                    old_token_log_probs=old, clip_eps=0.2)  # fmt: skip
    # A > 0: min(1.5, 1.2) = 1.2 (clipped), min(0.5, 0.8) = 0.5, 1.2 (clipped), 1.1
    assert loss.item() == pytest.approx(-(1.2 + 0.5 + 1.2 + 1.1) / 4, rel=1e-6)
    assert float(info["clip_fraction"]) == 0.75  # |rho - 1| > 0.2 for 1.5, 0.5, 1.5
    assert float(info["ratio_mean"]) == pytest.approx((1.5 + 0.5 + 1.5 + 1.1) / 4, rel=1e-6)
    loss, info = sequence_surrogate(lp, torch.ones(1, 4, dtype=torch.bool), -adv, "token_mean",
                                    old_token_log_probs=old, clip_eps=0.2)  # fmt: skip
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
            unclipped, clipped = rho * a, min(max(rho, 1 - eps), 1 + eps) * a
            total -= min(unclipped, clipped) * w
            n_clipped += abs(rho - 1) > eps
            if clipped >= unclipped:
                exp_grad[i, t] = -a * rho * w  # d(rho A)/d log pi = rho A
    assert loss.item() == pytest.approx(total, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(grad, exp_grad, rtol=1e-12, atol=1e-12)
    assert float(info["clip_fraction"]) == pytest.approx(n_clipped / int(mask.sum()))


def test_clip_is_inactive_on_policy() -> None:
    lp, mask, adv = _batch(9)
    plain, _ = sequence_surrogate(lp, mask, adv)
    clipped, info = sequence_surrogate(lp, mask, adv, clip_eps=0.1)
    assert torch.equal(plain, clipped) and float(info["clip_fraction"]) == 0.0


# ---------------------------------------------------------------- KL penalty


@pytest.mark.parametrize("estimator", ["k1", "k3"])
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
        x = float(ref[i, t] - lp.detach()[i, t])  # log(pi_ref / pi)
        kl.append(-x if estimator == "k1" else math.exp(x) - x - 1)
        d_kl[i, t] = 1.0 if estimator == "k1" else 1.0 - math.exp(x)
    n = len(kl)
    assert float(info["kl"]) == pytest.approx(sum(kl) / n, rel=1e-12)
    assert loss.item() == pytest.approx(beta * sum(kl) / n, rel=1e-12)
    assert float(info["policy_loss"]) == 0.0  # zero advantages: only the KL term is left
    torch.testing.assert_close(grad, beta * d_kl / n, rtol=1e-12, atol=1e-12)


def test_k3_is_nonnegative_per_token() -> None:
    x = torch.linspace(-25.0, 25.0, 501)  # log(pi_ref / pi), beyond the clamp on both sides
    lp, one = torch.full((1, 1), -3.0), torch.ones(1, 1, dtype=torch.bool)
    for i in range(0, 501, 5):
        kw = {"ref_token_log_probs": lp + x[i], "kl_coef": 1.0}
        loss, _ = sequence_surrogate(lp, one, torch.zeros(1), **kw)
        assert loss.item() >= 0.0 and math.isfinite(loss.item())


def test_kl_only_reported_when_coefficient_is_zero() -> None:
    lp, mask, adv = _batch(2)
    ref = lp.detach() - 1.0
    plain, _ = sequence_surrogate(lp, mask, adv)
    loss, info = sequence_surrogate(lp, mask, adv, ref_token_log_probs=ref)
    assert torch.equal(plain, loss) and torch.equal(info["policy_loss"], loss.detach())
    assert float(info["kl"]) == pytest.approx(math.exp(-1.0), rel=1e-12)  # k3 at x = -1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_kl_and_ratio_do_not_overflow(dtype: torch.dtype) -> None:
    lp = torch.tensor([[-60.0, -1.0], [-2.0, -0.5]], dtype=dtype, requires_grad=True)
    ref = torch.tensor([[-1.0, -60.0], [-2.0, -1.5]], dtype=dtype)
    old = torch.tensor([[-1.0, -1.0], [-40.0, -0.5]], dtype=dtype)
    mask = torch.ones(2, 2, dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0], dtype=dtype)
    loss, info = sequence_surrogate(lp, mask, adv, "token_mean", old_token_log_probs=old,
                                    ref_token_log_probs=ref, kl_coef=0.1)  # fmt: skip
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
        (ValueError, "kl_estimator", {"kl_estimator": "k2", "ref_token_log_probs": lp.detach()}),
    ]
    for error, name, change in cases:
        kwargs = {"token_log_probs": lp, "mask": mask, "advantages": adv, **change}
        with pytest.raises(error, match=name):
            sequence_surrogate(**kwargs)
