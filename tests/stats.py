r"""Tolerances for statistical tests: z from a stated failure rate, Bonferroni-corrected.

A statistical test compares the mean of ``N`` independent draws with a known truth and accepts
when :math:`|\bar g - g^\star| \le z\,\hat\sigma/\sqrt N` for every checked entry. With ``m``
entries checked in one test and an allowed failure rate ``alpha`` for the whole test, the
Bonferroni correction gives each entry the two-sided rate ``alpha / m``:

.. math::  z = \Phi^{-1}\!\left(1 - \frac{\alpha}{2m}\right).

References:
    Dunn (1961), Multiple comparisons among means. The same scheme is used by the statistical
    tests of ``torch.distributions``.
"""

from __future__ import annotations

import torch
from scipy.stats import norm
from torch import Tensor

__all__ = ["assert_mean", "mean_and_se", "z_bonferroni", "z_scores"]

# Entries whose standard error is exactly zero (a gradient that is identically zero) must match
# to rounding error; float64 throughout the statistical tests.
EXACT_ATOL = 1e-10


def z_bonferroni(alpha: float, m: int = 1) -> float:
    r"""Two-sided critical value for ``m`` simultaneous checks at family-wise rate ``alpha``.

    .. math::  z = \Phi^{-1}(1 - \alpha / (2m))

    Args:
        alpha: allowed probability that the test fails although every null hypothesis holds.
        m: number of checks in the test (entries compared).

    Returns:
        The critical value ``z`` (e.g. 3.29 for ``alpha=1e-3, m=1``).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a probability in (0, 1), got {alpha!r}")
    if m < 1:
        raise ValueError(f"m: expected at least one check, got {m!r}")
    return float(norm.isf(alpha / (2 * m)))


def mean_and_se(draws: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean over the first dimension and its standard error :math:`\hat\sigma/\sqrt N`.

    Args:
        draws: ``(N, ...)`` independent draws.

    Returns:
        ``(mean, se)``, each of shape ``draws.shape[1:]``.
    """
    n = draws.shape[0]
    return draws.mean(0), draws.std(0) / n**0.5


def z_scores(draws: Tensor, truth: Tensor) -> Tensor:
    """``|mean - truth| / se`` per entry (``inf`` where se is zero and the mean is off)."""
    mean, se = mean_and_se(draws)
    dev = (mean - truth).abs()
    dev = torch.where(dev <= EXACT_ATOL, torch.zeros_like(dev), dev)
    return dev / se


def assert_mean(
    draws: Tensor, truth: Tensor, alpha: float, m: int | None = None, what: str = ""
) -> None:
    r"""Assert :math:`|\bar x - x^\star| \le z\,\hat\sigma/\sqrt N` per entry, Bonferroni over m.

    Args:
        draws: ``(N, ...)`` independent draws of an unbiased estimator.
        truth: ``draws.shape[1:]`` (or broadcastable), the exact expectation.
        alpha: family-wise failure rate of this call.
        m: number of checks to correct for (default: the number of entries).
        what: a label for the failure message.
    """
    truth = torch.as_tensor(truth, dtype=draws.dtype).expand(draws.shape[1:])
    m = truth.numel() if m is None else m
    z = z_bonferroni(alpha, m)
    mean, se = mean_and_se(draws)
    ok = (mean - truth).abs() <= z * se + EXACT_ATOL
    assert bool(ok.all()), (
        f"{what}: mean of {draws.shape[0]} draws differs from the truth by more than "
        f"z={z:.2f} standard errors (alpha={alpha:g}, m={m})\n"
        f"mean  {mean.flatten().tolist()}\ntruth {truth.flatten().tolist()}\n"
        f"se    {se.flatten().tolist()}\n|dev|/se {z_scores(draws, truth).flatten().tolist()}"
    )
