"""Discounted returns and GAE: hand-computed cases, brute-force references, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from logtrick.rl import compute_gae, discounted_returns

F, T_ = False, True


def _t(rows: list, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


# ------------------------------------------------------------------ known answers
def test_returns_by_hand_with_boundary_and_truncation() -> None:
    # one env, T = 5, γ = 0.5: an episode terminates at t=1, the next is truncated at t=3
    # (bootstrapped with V(s_final) = 10), the last row continues past the rollout (V = 4).
    rewards = _t([[1.0], [2.0], [3.0], [4.0], [5.0]])
    next_values = _t([[7.0], [99.0], [8.0], [10.0], [4.0]])  # 99: ignored (terminated)
    terminated = _t([[F], [T_], [F], [F], [F]], torch.bool)
    truncated = _t([[F], [F], [F], [T_], [F]], torch.bool)
    got = discounted_returns(rewards, next_values, terminated, truncated, 0.5)
    g4 = 5 + 0.5 * 4  # 7
    g3 = 4 + 0.5 * 10  # 9: truncation bootstraps, G_4 belongs to the next episode
    g2 = 3 + 0.5 * g3  # 7.5
    g1 = 2.0  # terminated: no future
    g0 = 1 + 0.5 * g1  # 2
    assert got.flatten().tolist() == [g0, g1, g2, g3, g4]


def test_gae_by_hand_two_envs() -> None:
    # T = 3, B = 2, γ = 0.5, λ = 0.5. env 0 terminates at t=1; env 1 is truncated at t=0.
    rewards = _t([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    values = _t([[2.0, 4.0], [2.0, 4.0], [2.0, 4.0]])
    next_values = _t([[2.0, 6.0], [0.0, 4.0], [2.0, 8.0]])
    terminated = _t([[F, F], [T_, F], [F, F]], torch.bool)
    truncated = _t([[F, T_], [F, F], [F, F]], torch.bool)
    adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, 0.5, 0.5)
    # δ = r + γ(1-term)V' - V
    d = [[1 + 1 - 2, 1 + 3 - 4], [1 + 0 - 2, 2 + 2 - 4], [1 + 1 - 2, 3 + 4 - 4]]
    # A_t = δ_t + γλ(1-done_t)A_{t+1}, γλ = 1/4
    a2 = [d[2][0], d[2][1]]
    a1 = [d[1][0], d[1][1] + 0.25 * a2[1]]  # env 0 done at t=1: cut
    a0 = [d[0][0] + 0.25 * a1[0], d[0][1]]  # env 1 done at t=0: cut
    assert adv.tolist() == [a0, a1, a2]
    assert torch.equal(ret, adv + values)


def test_lambda_one_is_monte_carlo_and_lambda_zero_is_td() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards, values, bootstrap = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    terminated = torch.rand(6, 4, generator=gen) < 0.2
    truncated = torch.rand(6, 4, generator=gen) < 0.2
    # inside an episode next_values[t] = values[t + 1] (as collected); free at ends and last row
    next_values = torch.cat([values[1:], bootstrap[-1:]])
    next_values = torch.where(terminated | truncated, bootstrap, next_values)
    args = (rewards, values, next_values, terminated, truncated, 0.9)
    mc = discounted_returns(rewards, next_values, terminated, truncated, 0.9)
    adv, ret = compute_gae(*args, 1.0)
    torch.testing.assert_close(ret, mc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adv, mc - values, rtol=1e-12, atol=1e-12)
    td, _ = compute_gae(*args, 0.0)
    delta = rewards + 0.9 * (~terminated).double() * next_values - values
    torch.testing.assert_close(td, delta, rtol=0, atol=1e-15)


def test_no_bootstrap_with_zero_next_values() -> None:
    rewards = torch.ones(4, 1)
    flags = torch.zeros(4, 1, dtype=torch.bool)
    got = discounted_returns(rewards, 0, flags, flags, 1.0)
    assert got.flatten().tolist() == [4.0, 3.0, 2.0, 1.0]


def test_next_values_ignored_where_terminated() -> None:
    gen = torch.Generator().manual_seed(1)
    rewards, values, next_values = torch.randn(3, 5, 3, generator=gen)
    terminated = torch.rand(5, 3, generator=gen) < 0.4
    truncated = torch.rand(5, 3, generator=gen) < 0.4
    changed = next_values + 100.0 * terminated
    assert bool(terminated.any())
    ref = compute_gae(rewards, values, next_values, terminated, truncated, 0.9, 0.8)
    out = compute_gae(rewards, values, changed, terminated, truncated, 0.9, 0.8)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    ref = discounted_returns(rewards, next_values, terminated, truncated, 0.9)
    out = discounted_returns(rewards, changed, terminated, truncated, 0.9)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


# ------------------------------------------------------------------ brute force
def _brute_returns(r, nv, term, trunc, gamma):
    """Pure-Python reward-to-go, written from the definition: sum until the episode ends."""
    T, B = r.shape
    out = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            total, k = 0.0, t
            while True:
                total += gamma ** (k - t) * r[k, b]
                if term[k, b]:
                    break
                if trunc[k, b] or k == T - 1:
                    total += gamma ** (k - t + 1) * nv[k, b]
                    break
                k += 1
            out[t, b] = total
    return out


def _brute_gae(r, v, nv, term, trunc, gamma, lam):
    """Pure-Python GAE as the (γλ)-discounted sum of TD errors up to the episode's end."""
    T, B = r.shape
    adv = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            for k in range(t, T):
                delta = r[k, b] + gamma * (0.0 if term[k, b] else nv[k, b]) - v[k, b]
                adv[t, b] += (gamma * lam) ** (k - t) * delta
                if term[k, b] or trunc[k, b]:
                    break
    return adv


@st.composite
def _batches(draw: st.DrawFn) -> tuple:
    T, B = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    finite = st.floats(-10, 10, allow_nan=False)
    r, v, nv = (draw(arrays(np.float64, (T, B), elements=finite)) for _ in range(3))
    term, trunc = (draw(arrays(np.bool_, (T, B))) for _ in range(2))
    gamma, lam = draw(st.floats(0, 1)), draw(st.floats(0, 1))
    return r, v, nv, term, trunc, gamma, lam


def _tol(x: np.ndarray) -> float:
    return 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))


@settings(max_examples=150, deadline=None)
@given(_batches())
def test_vectorised_equals_brute_force(batch: tuple) -> None:
    r, v, nv, term, trunc, gamma, lam = batch
    tensors = [torch.from_numpy(x) for x in (r, v, nv, term, trunc)]
    got_ret = discounted_returns(tensors[0], *tensors[2:], gamma).numpy()
    want_ret = _brute_returns(r, nv, term, trunc, gamma)
    np.testing.assert_allclose(got_ret, want_ret, rtol=0, atol=_tol(want_ret))
    adv, ret = compute_gae(*tensors, gamma, lam)
    want_adv = _brute_gae(r, v, nv, term, trunc, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), want_adv, rtol=0, atol=_tol(want_adv))
    np.testing.assert_allclose(ret.numpy(), want_adv + v, rtol=0, atol=_tol(want_adv + v))


# ------------------------------------------------------------------ input checks
def _inputs() -> dict:
    flags = torch.zeros(3, 2, dtype=torch.bool)
    return {
        "rewards": torch.ones(3, 2),
        "values": torch.zeros(3, 2),
        "next_values": torch.zeros(3, 2),
        "terminated": flags,
        "truncated": flags.clone(),
        "gamma": 0.9,
        "lam": 0.95,
    }


@pytest.mark.parametrize(
    ("name", "bad", "error", "match"),
    [
        ("rewards", torch.tensor([[math.nan, 0.0]] * 3), ValueError, "rewards: .*NaN or inf"),
        ("rewards", torch.tensor([[0.0, math.inf]] * 3), ValueError, r"rewards: .*index \(0, 1\)"),
        ("values", torch.full((3, 2), math.nan), ValueError, "values: .*NaN"),
        ("next_values", torch.zeros(3, 3), ValueError, r"next_values: expected shape \(3, 2\)"),
        ("rewards", torch.zeros(3), ValueError, r"rewards: expected shape \(T, B\)"),
        ("rewards", torch.zeros(3, 2, dtype=torch.long), TypeError, "rewards: .*floating"),
        ("terminated", torch.zeros(3, 2), TypeError, "terminated: expected a bool"),
        ("truncated", torch.zeros(2, 2, dtype=torch.bool), ValueError, "truncated: .*shape"),
        ("gamma", 1.5, ValueError, r"gamma: expected a number in \[0.0, 1.0\]"),
        ("lam", -0.1, ValueError, r"lam: expected a number in \[0.0, 1.0\]"),
        ("gamma", "0.9", ValueError, "gamma"),
    ],
)
def test_bad_inputs_name_the_argument(name: str, bad: object, error: type, match: str) -> None:
    kwargs = {**_inputs(), name: bad}
    with pytest.raises(error, match=match):
        compute_gae(**kwargs)
    if name not in ("values", "lam"):
        kwargs.pop("values"), kwargs.pop("lam")
        with pytest.raises(error, match=match):
            discounted_returns(**kwargs)
