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
        "delta_method",  # issue 23: every estimator that applies runs
        "measure_valued",
        "pathwise",
    ]
    assert list(rows) == expected, out
    # x ~ N(1, 1), f = x^2, K = 4: exact traces 166/4 = 41.5 (score function) and 16/4 = 4
    # (pathwise); at R = 60 the ordering cannot flip in practice (SEs ~ 13 and ~ 0.6).
    assert float(rows["pathwise"][0]) < float(rows["score_function"][0])
    # f-evaluations per estimate, counted in the run: K = 4 for the score function and pathwise,
    # K (1 + 4 n) = 20 for measure-valued (n = 1 component), K + 1 for the delta method's f(mu)
    evals = {label: r[3] for label, r in rows.items()}
    assert evals.pop("measure_valued") == "20" and evals.pop("delta_method") == "5", evals
    assert set(evals.values()) == {"4"}, evals
    assert rows["score_function"][5] == "1.00"  # relative cost: time against the score function
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
    assert {"arm", "disarm", "rebar", "relax", "gumbel_softmax", "straight_through"} <= set(rows)
    assert "measure_valued" not in rows and "delta_method" not in rows
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


def test_estimator_costs_fill_the_docs_columns_from_a_run() -> None:
    """Every registered estimator but auto is measured; f evaluations per sample are counted."""
    import logtrick as lt
    from logtrick.chooser import estimator_costs

    costs = estimator_costs(samples=2, repeats=5)
    assert set(costs) == set(lt.ESTIMATORS) - {"auto"}
    per_sample = {name: c.f_evals_per_sample for name, c in costs.items()}
    assert per_sample["arm"] == per_sample["disarm"] == 2.0  # an antithetic pair per sample
    assert per_sample["measure_valued"] == 5.0  # 1 + 4 n, n = 1 component
    assert per_sample["score_function"] == per_sample["pathwise"] == 1.0
    assert costs["score_function"].relative_cost == 1.0
    assert all(c.relative_cost > 0 for c in costs.values())
