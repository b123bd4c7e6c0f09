"""End-to-end tests of ``logtrick compare`` (through ``main``, in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from logtrick.cli import COMMANDS, main


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by estimator label: the label runs up to the first double space."""
    rows = {}
    for line in text.splitlines():
        label, _, rest = line.strip().partition("  ")
        if label and rest and rest.split()[0][0].isdigit():
            rows[label] = rest.split()
    return rows


def test_compare_gaussian_prints_table_and_writes_plot(tmp_path: Path, capsys) -> None:
    argv = [
        "compare",
        "--problem",
        "gaussian",
        "--k",
        "0",
        "--samples",
        "4",
        "--repeats",
        "60",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    expected = [
        "score_function",
        "sf + moving_average",
        "sf + leave_one_out",
        "sf + optimal_scale",
        "sf + exact E[f] (oracle)",
        "pathwise",
    ]
    assert list(rows) == expected, out
    # x ~ N(1, 1), f = x^2, K = 4: exact traces 166/4 = 41.5 (score function) and 16/4 = 4
    # (pathwise); at R = 60 the ordering cannot flip in practice (SEs ~ 13 and ~ 0.6).
    assert float(rows["pathwise"][0]) < float(rows["score_function"][0])
    assert all(r[3] == "4" for r in rows.values())  # f-evaluations per estimate
    png = tmp_path / "compare-gaussian.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_compare_bernoulli_has_no_pathwise_row(tmp_path: Path, capsys) -> None:
    argv = [
        "compare",
        "--problem",
        "bernoulli",
        "--target",
        "0.45",
        "--repeats",
        "50",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    assert "pathwise" not in rows and "sf + leave_one_out" in rows
    # With the exact mean as baseline every term equals (1 - 2t) (b - p)^2 = 0.1 * 0.25 at
    # p = 1/2: the variance is zero up to rounding; the plain score function's is not.
    assert float(rows["sf + exact E[f] (oracle)"][0]) < 1e-12 < float(rows["score_function"][0])
    assert (tmp_path / "compare-bernoulli.png").stat().st_size > 1000


def test_help_lists_compare(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "compare" in capsys.readouterr().out and "compare" in COMMANDS
    assert main([]) == 2  # no subcommand: help and a usage error status


def test_bad_arguments_exit_with_a_message(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compare", "--samples", "1", "--out", str(tmp_path)])
    assert info.value.code == 2 and "--samples" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["compare", "--problem", "gaussian", "--function", "exp", "--k", "-1"])
    assert info.value.code == 2 and "infinite" in capsys.readouterr().err
