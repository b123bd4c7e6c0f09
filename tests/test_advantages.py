"""Tests for grouped advantages: brute-force references, numerical safety, unbiasedness."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from logtrick.language.advantages import (
    METHODS,
    GroupedAdvantages,
    MovingAverageState,
    baseline_advantages,
    batch_normalized_advantages,
    group_mean_advantages,
    group_normalized_advantages,
    grouped_advantages,
    moving_average_advantages,
    rank_advantages,
    reinforce_advantages,
    rloo_advantages,
)

torch.set_num_threads(1)

# ---------------------------------------------------------------- brute-force references (loops)


def ref_rloo(rows: list[list[float]]) -> list[list[float]]:
    return [[r - (sum(row) - r) / (len(row) - 1) for r in row] for row in rows]


def ref_mean(rows: list[list[float]]) -> list[list[float]]:
    return [[r - sum(row) / len(row) for r in row] for row in rows]


def ref_std(values: list[float], unbiased: bool) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - int(unbiased)))


def ref_normalized(rows: list[list[float]], std: str, eps: float, unbiased: bool) -> list:
    flat = [r for row in rows for r in row]
    out = []
    for row, dev in zip(rows, ref_mean(rows)):
        if std == "group":
            s = ref_std(row, unbiased)
        elif std == "batch":
            s = ref_std(flat, unbiased)
        else:
            s, eps = 1.0, 0.0
        out.append([d / (s + eps) for d in dev])
    return out


def ref_rank(rows: list[list[float]]) -> list[list[float]]:
    out = []
    for row in rows:
        k = len(row)
        ranks = []
        for r in row:
            less = sum(1 for v in row if v < r)
            equal = sum(1 for v in row if v == r)
            ranks.append((less + (equal - 1) / 2) / (k - 1) - 0.5)
        out.append(ranks)
    return out


def ref_degenerate(rows: list[list[float]], baseline: list[float] | None = None) -> int:
    if baseline is None:
        return sum(1 for row in rows if all(r == row[0] for r in row))
    return sum(1 for row, b in zip(rows, baseline) if all(r == b for r in row))


@st.composite
def reward_rows(draw: st.DrawFn, min_k: int = 2, exact: bool = False) -> list[list[float]]:
    """Rewards ``(contexts, k)``; ``exact``: multiples of 1/4, so float64 sums are exact."""
    c = draw(st.integers(1, 5))
    k = draw(st.integers(min_k, 7))
    if exact or draw(st.booleans()):  # small integer grid: many ties and all-equal groups
        lo = draw(st.sampled_from([0, -400]))
        value = st.integers(lo, lo + draw(st.sampled_from([1, 3, 800]))).map(lambda v: v / 4)
    else:
        value = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    return [[draw(value) for _ in range(k)] for _ in range(c)]


def close(actual: torch.Tensor, expected: list, scale: float = 1.0) -> None:
    exp = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, exp, rtol=1e-9, atol=1e-9 * scale)


# ---------------------------------------------------------------- against the references

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@SETTINGS
@given(reward_rows())
def test_rloo_mean_rank_match_loops(rows: list[list[float]]) -> None:
    r = torch.tensor(rows, dtype=torch.float64)
    scale = 1.0 + max(abs(v) for row in rows for v in row)
    for fn, ref in [
        (rloo_advantages, ref_rloo),
        (group_mean_advantages, ref_mean),
        (rank_advantages, ref_rank),
    ]:
        out = fn(r)
        close(out.advantages, ref(rows), scale)
        assert out.degenerate_groups == ref_degenerate(rows)


@SETTINGS
@given(
    reward_rows(exact=True),
    st.sampled_from(["group", "batch", "none"]),
    st.booleans(),
    st.sampled_from([0.0, 1e-6, 0.5]),
)
def test_normalized_matches_loop(rows: list, std: str, unbiased: bool, eps: float) -> None:
    r = torch.tensor(rows, dtype=torch.float64)
    if std != "group" and eps == 0.0 and ref_std([v for w in rows for v in w], unbiased) == 0:
        eps = 1e-6  # a batch of equal rewards with eps=0 divides 0 by 0
    if std == "group" and eps == 0.0:
        eps = 1e-6
    out = group_normalized_advantages(r, std=std, eps=eps, unbiased=unbiased)
    close(out.advantages, ref_normalized(rows, std, eps, unbiased), 1e3)
    assert out.degenerate_groups == ref_degenerate(rows)
    via = grouped_advantages(r, "mean_std", std=std, eps=eps, unbiased=unbiased)
    torch.testing.assert_close(via.advantages, out.advantages, rtol=0, atol=0)


@SETTINGS
@given(reward_rows(min_k=1), st.data())
def test_baseline_matches_loop(rows: list[list[float]], data: st.DataObject) -> None:
    r = torch.tensor(rows, dtype=torch.float64)
    # baselines equal to a reward of the group sometimes, so degenerate groups occur
    b = [data.draw(st.sampled_from([row[0], 0.0, 2.5])) for row in rows]
    shape = data.draw(st.sampled_from([(len(rows),), (len(rows), 1)]))
    out = baseline_advantages(r, torch.tensor(b, dtype=torch.float64).reshape(shape))
    close(out.advantages, [[v - bc for v in row] for row, bc in zip(rows, b)], 1e3)
    assert out.degenerate_groups == ref_degenerate(rows, b)


@SETTINGS
@given(
    st.lists(reward_rows(min_k=1, exact=True), min_size=1, max_size=4),
    st.sampled_from([0.0, 0.5, 0.9]),
)
def test_moving_average_matches_loop(calls: list[list[list[float]]], decay: float) -> None:
    state: MovingAverageState | None = None
    m, t = 0.0, 0
    for rows in calls:
        b = 0.0 if t == 0 else m / (1.0 - decay**t)  # earlier calls only
        out, state = moving_average_advantages(
            torch.tensor(rows, dtype=torch.float64), state, decay
        )
        close(out.advantages, [[v - b for v in row] for row in rows], 1e3)
        assert out.degenerate_groups == ref_degenerate(rows, [b] * len(rows))
        flat = [v for row in rows for v in row]
        m, t = decay * m + (1.0 - decay) * sum(flat) / len(flat), t + 1
        assert state.steps == t
        assert float(state.average) == pytest.approx(m, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------- properties and known answers


def test_rloo_is_rescaled_group_mean_and_sums_to_zero() -> None:
    g = torch.Generator().manual_seed(0)
    for k in (2, 3, 8):
        r = torch.randn(6, k, generator=g, dtype=torch.float64) * 3 + 1
        rloo = rloo_advantages(r).advantages
        mean = group_mean_advantages(r).advantages
        torch.testing.assert_close(rloo, mean * k / (k - 1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            rloo.sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0
        )
        others = (r.sum(1, keepdim=True) - r) / (k - 1)
        torch.testing.assert_close(rloo, r - others, rtol=1e-12, atol=1e-12)


def test_known_answers() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    a = grouped_advantages(r, "rloo")
    assert isinstance(a, GroupedAdvantages) and a.degenerate_groups == 1
    torch.testing.assert_close(a.advantages[0], torch.tensor([-5.0, -1.0, 3.0, 3.0]) / 3)
    torch.testing.assert_close(
        grouped_advantages(r, "rank").advantages[0], torch.tensor([-0.5, -1 / 6, 1 / 3, 1 / 3])
    )
    pop = grouped_advantages(r, "mean_std", unbiased=False, eps=0.0).advantages[0]
    torch.testing.assert_close(pop, torch.tensor([-1.25, -0.25, 0.75, 0.75]) / math.sqrt(0.6875))
    assert torch.equal(grouped_advantages(r, "mean_std").advantages[1], torch.zeros(4))


def test_family_by_name_known_answers() -> None:
    """Each named method on a hand-computed example (formula and paper in the docstrings)."""
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    by_name = {m: grouped_advantages(r, m).advantages for m in METHODS if m != "baseline"}
    torch.testing.assert_close(by_name["reinforce"], r)  # Williams 1992: A = r
    rloo = torch.tensor([[2, -2, -2, 2], [1, 1, 1, -3]], dtype=torch.float64) / 3
    torch.testing.assert_close(by_name["rloo"], rloo)  # r_i - mean of the other three
    mean = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]], dtype=torch.float64)
    torch.testing.assert_close(by_name["dr_grpo"], mean)  # r_i - group mean (Dr. GRPO)
    std = torch.tensor([[1 / 3], [0.25]], dtype=torch.float64).sqrt()  # sample std per group
    torch.testing.assert_close(by_name["grpo"], mean / (std + 1e-6))  # (r - mean) / std (GRPO)
    batch_std = math.sqrt((5 * (1 - 0.625) ** 2 + 3 * 0.625**2) / 7)  # mean 5/8 over 8
    torch.testing.assert_close(by_name["reinforce_plus_plus"], (r - 0.625) / (batch_std + 1e-6))
    torch.testing.assert_close(by_name["mean"], by_name["dr_grpo"], rtol=0, atol=0)
    torch.testing.assert_close(by_name["mean_std"], by_name["grpo"], rtol=0, atol=0)
    torch.testing.assert_close(reinforce_advantages(r).advantages, r, rtol=0, atol=0)
    pp = batch_normalized_advantages(r, eps=0.0, unbiased=False).advantages
    torch.testing.assert_close(pp, (r - 0.625) / math.sqrt(0.625 * 0.375))
    group_mean_batch_std = grouped_advantages(r, "grpo", std="batch").advantages
    torch.testing.assert_close(group_mean_batch_std, mean / (batch_std + 1e-6))  # ++-baseline


def test_degenerate_groups_of_new_methods() -> None:
    r = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
    assert reinforce_advantages(r).degenerate_groups == 1  # all zero rewards only
    out = batch_normalized_advantages(r)  # batch mean 0.5: the third group carries no signal
    assert out.degenerate_groups == 1 and torch.equal(out.advantages[2], torch.zeros(2))
    same = batch_normalized_advantages(torch.full((2, 3), 7.0), eps=0.0)
    assert torch.equal(same.advantages, torch.zeros(2, 3)) and same.degenerate_groups == 2
    with pytest.raises(ValueError, match="rewards"):
        batch_normalized_advantages(torch.zeros(1, 1))


def test_all_equal_groups_are_counted_for_every_method() -> None:
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [7.0, 7.0, 7.0], [0.0, 0.0, 0.0]])
    for method in ("rloo", "mean", "mean_std", "rank"):
        out = grouped_advantages(r, method)
        assert out.degenerate_groups == 3, method
        assert torch.equal(out.advantages[[0, 2, 3]], torch.zeros(3, 3)), method
    out = grouped_advantages(r, "mean_std", std="batch")
    assert out.degenerate_groups == 3 and torch.equal(out.advantages[2], torch.zeros(3))
    b = torch.tensor([1.0, 0.0, 0.0, 0.0])  # matches groups 0 and 3 only
    assert grouped_advantages(r, "baseline", baseline=b).degenerate_groups == 2
    first, state = moving_average_advantages(r)  # baseline 0: only the all-zero group
    assert first.degenerate_groups == 1
    assert moving_average_advantages(torch.ones(2, 3), state, 0.5)[0].degenerate_groups == 0


def test_dtypes_and_detached() -> None:
    r = torch.tensor([[1.0, 0.0, 1.0]], requires_grad=True)
    out = rloo_advantages(r)
    assert out.advantages.dtype == torch.float32 and not out.advantages.requires_grad
    ints = torch.tensor([[1, 0, 0, 1]])
    assert rloo_advantages(ints).advantages.dtype == torch.get_default_dtype()
    assert rank_advantages(ints.bool()).advantages.dtype == torch.get_default_dtype()
    for dt in (torch.float16, torch.bfloat16):
        h = torch.tensor([[1.0, 2.0, 4.0]], dtype=dt)
        out = group_normalized_advantages(h).advantages
        exp = group_normalized_advantages(h.double()).advantages.to(dt)
        assert out.dtype == dt and torch.equal(out, exp)


# ---------------------------------------------------------------- numerical safety


def test_large_offset_small_spread_float64() -> None:
    g = torch.Generator().manual_seed(1)
    spread = torch.randn(5, 6, generator=g, dtype=torch.float64) * 1e-3
    big = 1e8 + spread  # float64 spacing at 1e8 is 1.5e-8: spread kept to ~1e-5 relative
    for std in ("group", "batch", "none"):
        out = group_normalized_advantages(big, std=std, eps=1e-12).advantages
        exp = group_normalized_advantages((big - 1e8), std=std, eps=1e-12).advantages
        assert out.isfinite().all()
        torch.testing.assert_close(out, exp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("offset", [1e8, 1e30, -1e30])
def test_large_offset_float32_exact(offset: float) -> None:
    # equally spaced float32 values far from 0: a one-pass E[r^2] - E[r]^2 would cancel (1e8) or
    # overflow (1e30 squared > float32 max); the two-pass, shifted float64 variance is exact.
    base = torch.tensor(offset, dtype=torch.float32)
    ulp = float(torch.nextafter(base.abs(), torch.tensor(math.inf)) - base.abs())
    r = (base + torch.arange(4, dtype=torch.float32) * 4 * ulp).repeat(3, 1)
    assert torch.equal(
        torch.diff(r.double(), dim=1), torch.full((3, 3), 4 * ulp, dtype=torch.float64)
    )
    j = torch.arange(4, dtype=torch.float64) - 1.5
    for unbiased in (True, False):
        for std, values in (("group", [0.0, 1.0, 2.0, 3.0]), ("batch", [0.0, 1.0, 2.0, 3.0] * 3)):
            expected = (j / ref_std(values, unbiased)).float().repeat(3, 1)
            out = group_normalized_advantages(r, std=std, eps=0.0, unbiased=unbiased)
            torch.testing.assert_close(out.advantages, expected, rtol=1e-6, atol=1e-6)
    same = torch.full((2, 5), offset, dtype=torch.float32)
    out = group_normalized_advantages(same, eps=0.0 + 1e-6)
    assert torch.equal(out.advantages, torch.zeros(2, 5)) and out.degenerate_groups == 2


# ---------------------------------------------------------------- validation


def test_validation_names_the_argument() -> None:
    good = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="rewards"):
        rloo_advantages(torch.zeros(6))
    with pytest.raises(ValueError, match=r"rewards.*k >= 2"):
        rloo_advantages(torch.zeros(4, 1))
    for method in ("rank", "mean_std", "grpo", "rloo", "dr_grpo", "mean"):
        with pytest.raises(ValueError, match=r"rewards.*k >= 2"):
            grouped_advantages(torch.ones(4, 1), method)
    with pytest.raises(ValueError, match=r"rewards.*k >= 2"):  # issue 23: all-zero, silently
        group_normalized_advantages(torch.ones(4, 1), std="none")
    for bad in (math.nan, math.inf, -math.inf):
        r = good.clone()
        r[1, 2] = bad
        for method in ("rloo", "mean", "mean_std", "rank"):
            with pytest.raises(ValueError, match=r"rewards.*NaN or inf"):
                grouped_advantages(r, method)
        with pytest.raises(ValueError, match="rewards"):
            moving_average_advantages(r)
        with pytest.raises(ValueError, match="baseline"):
            baseline_advantages(good, torch.tensor([0.0, bad]))
        for method in ("reinforce", "grpo", "dr_grpo", "reinforce_plus_plus"):
            with pytest.raises(ValueError, match=r"rewards.*NaN or inf"):
                grouped_advantages(r, method)
    with pytest.raises(TypeError, match="rewards"):
        rloo_advantages([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"baseline.*shape"):
        baseline_advantages(good, torch.zeros(3))
    with pytest.raises(ValueError, match="baseline"):
        grouped_advantages(good, "baseline")
    with pytest.raises(ValueError, match="baseline"):
        grouped_advantages(good, "rloo", baseline=torch.zeros(2))
    with pytest.raises(ValueError, match="method"):
        grouped_advantages(good, "ppo")
    with pytest.raises(ValueError, match="std"):
        grouped_advantages(good, "rloo", std="batch")
    with pytest.raises(ValueError, match="eps"):
        batch_normalized_advantages(good, eps=-1.0)
    with pytest.raises(TypeError, match="rewards"):
        grouped_advantages(torch.zeros(2, 2, dtype=torch.complex64), "grpo")
    with pytest.raises(ValueError, match="std"):
        group_normalized_advantages(good, std="global")
    with pytest.raises(ValueError, match="eps"):
        group_normalized_advantages(good, eps=-1.0)
    with pytest.raises(ValueError, match="decay"):
        moving_average_advantages(good, None, 1.0)
    with pytest.raises(TypeError, match="state"):
        moving_average_advantages(good, 0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- unbiasedness (statistical)

C, V, K, N = 3, 4, 4, 20_000  # contexts, categories, samples per context, repetitions
ALPHA = 1e-3  # probability that the whole test fails although every estimator is unbiased


def _toy_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    logits = torch.randn(C, V, generator=g, dtype=torch.float64)
    f = torch.rand(C, V, generator=g, dtype=torch.float64) * 4 - 1  # reward of category y
    probs = logits.softmax(-1)
    exact = probs * (f - (probs * f).sum(-1, keepdim=True))  # d E_pi[f] / d logits
    return probs, f, exact


def _gradients(
    probs: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, norm: float
) -> torch.Tensor:
    """Per-repetition estimates ``norm * sum_i A_i (onehot(y_i) - pi)``: ``(N, C, V)``."""
    score = torch.nn.functional.one_hot(y, V).double() - probs[None, :, None, :]  # (N, C, K, V)
    return norm * (adv[..., None] * score).sum(2)


def _biased_components(grads: torch.Tensor, exact: torch.Tensor, z: float) -> int:
    mean = grads.mean(0)
    se = grads.std(0) / math.sqrt(grads.shape[0])
    return int(((mean - exact).abs() > z * se).sum())


def test_grouped_estimators_are_unbiased() -> None:
    probs, f, exact = _toy_problem()
    g = torch.Generator().manual_seed(7)
    y = torch.multinomial(probs.repeat(N * K, 1), 1, generator=g).view(N, K, C).transpose(1, 2)
    r = f[torch.arange(C)[None, :, None], y].reshape(N * C, K)  # (N * C, K)
    greedy = f[torch.arange(C), probs.argmax(-1)].repeat(N)  # self-critical baseline
    estimators = {
        "rloo": (rloo_advantages(r), 1 / K),
        "mean": (group_mean_advantages(r), 1 / (K - 1)),  # E = (K-1)/K grad for 1/K
        "baseline": (baseline_advantages(r, greedy), 1 / K),
        "reinforce": (reinforce_advantages(r), 1 / K),
    }
    checks = len(estimators) * C * V
    z = float(norm.ppf(1 - ALPHA / (2 * checks)))  # two-sided, Bonferroni over all components
    for name, (out, scale) in estimators.items():
        grads = _gradients(probs, y, out.advantages.view(N, C, K), scale)
        assert _biased_components(grads, exact, z) == 0, name
    # power: the same test sees the (K-1)/K shrinkage of the group mean with the 1/K weight
    grads = _gradients(probs, y, estimators["mean"][0].advantages.view(N, C, K), 1 / K)
    assert _biased_components(grads, exact, z) > 0


def test_moving_average_estimator_is_unbiased() -> None:
    probs, f, exact = _toy_problem()
    g = torch.Generator().manual_seed(11)
    n = 4_000
    y = torch.multinomial(probs.repeat(n * K, 1), 1, generator=g).view(n, K, C).transpose(1, 2)
    r = f[torch.arange(C)[None, :, None], y]  # (n, C, K)
    state, adv = None, torch.empty(n, C, K, dtype=torch.float64)
    for t in range(n):  # the baseline of call t uses calls < t only: a martingale difference
        out, state = moving_average_advantages(r[t], state, decay=0.9)
        adv[t] = out.advantages
    z = float(norm.ppf(1 - ALPHA / (2 * C * V)))  # failure rate ALPHA, Bonferroni over C * V
    assert _biased_components(_gradients(probs, y, adv, 1 / K), exact, z) == 0
    # power: a baseline that includes the current call's own rewards is seen as biased
    current = r - r.mean((1, 2), keepdim=True)
    assert _biased_components(_gradients(probs, y, current, 1 / K), exact, z) > 0
