"""Reading the RL suite's records: thresholds, tables (markdown) and learning-curve plots.

Split from ``rl_suite.py`` (which runs the systems under the protocol and writes the records);
``python benchmarks/rl_suite.py --report`` prints these tables.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0, "LunarLander-v3": 200.0,
              "Pendulum-v1": -200.0}  # fmt: skip
"""Returns that count as solved; other envs use their registered ``reward_threshold``."""


def threshold(env: str) -> float | None:
    """The return that counts as solved on ``env`` (``None``: none registered)."""
    if env in THRESHOLDS:
        return THRESHOLDS[env]
    import gymnasium as gym

    value = gym.spec(env).reward_threshold
    return None if value is None else float(value)


def reached(env: str, value: float) -> bool:
    """Whether an evaluation return counts as solving ``env``."""
    target = threshold(env)
    return target is not None and value >= target


def load_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _median_of(values: list[float | None]) -> float:
    """Median with unsolved runs (``None``) counted as +inf."""
    return statistics.median([np.inf if v is None else v for v in values])


def _fmt(values: list[float | None], scale: float, digits: int) -> str:
    """``median [min–max]`` over seeds; unsolved runs are '—' and count as +inf."""
    med = _median_of(values)
    solved = [v for v in values if v is not None]
    text = "—" if not np.isfinite(med) else f"{med / scale:.{digits}f}"
    if len(values) > 1 and solved:
        lo, hi = min(solved) / scale, max(values, key=lambda v: np.inf if v is None else v)
        hi_text = "—" if hi is None else f"{hi / scale:.{digits}f}"
        text += f" [{lo:.{digits}f}–{hi_text}]"
    return text


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (env, system): seeds, solves, medians and spread of steps and seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["env"], r["system"]), []).append(r)
    rows = []
    for (env, system), runs in groups.items():
        steps, times = [r["solved_at_step"] for r in runs], [r["solved_at_time"] for r in runs]
        with_cpu = all("solved_at_cpu" in r for r in runs)
        cpus = [r["solved_at_cpu"] for r in runs] if with_cpu else []
        rows.append({"env": env, "system": system, "n": len(runs),
                     "solved": sum(s is not None for s in steps),
                     "capped": sum(r["capped"] for r in runs),
                     "budget": max(r["budget"] for r in runs), "cap": max(r["cap"] for r in runs),
                     "steps": _fmt(steps, 1e3, 0), "time": _fmt(times, 1.0, 1),
                     "cpu": _fmt(cpus, 1.0, 1) if cpus else "n/a",
                     "median_time": _median_of(times),
                     "median_cpu": _median_of(cpus) if cpus else np.nan,
                     "sps": statistics.median(r["total_steps"] / r["train_time"]
                                              for r in runs)})  # fmt: skip
    return rows


def fixed_budget_markdown(results: list[dict[str, Any]]) -> str:
    """Fixed-budget runs: final evaluation return and training wall-clock, medians over seeds,
    and per env logtrick's ``ppo`` against SB3's (the ratio of median training seconds)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["env"], r["system"]), []).append(r)
    lines = ["| env | system | seeds | env steps | final return, median [min–max] "
             "| training s, median [min–max] | CPU s, median | training steps/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    for (env, system), runs in groups.items():
        final = [r["final_return"] for r in runs]
        times = [r["train_time"] for r in runs]
        cpu = statistics.median(r["cpu_at_evals"][-1] for r in runs)
        sps = statistics.median(r["total_steps"] / r["train_time"] for r in runs)
        medians[env, system] = (statistics.median(final), statistics.median(times))
        lines.append(f"| {env} | {system} | {len(runs)} | {runs[0]['total_steps'] // 1000}k | "
                     f"{_fmt(final, 1.0, 0)} | {_fmt(times, 1.0, 0)} | {cpu:.0f} | "
                     f"{sps:,.0f} |")  # fmt: skip
    lines += ["", "| env | ppo final return | sb3-ppo-default final return "
              "| ratio of median training s |", "|---|---:|---:|---:|"]  # fmt: skip
    for env in dict.fromkeys(e for e, _ in medians):
        if (env, "ppo") in medians and (env, "sb3-ppo-default") in medians:
            (ours, t_ours), (theirs, t_sb3) = medians[env, "ppo"], medians[env, "sb3-ppo-default"]
            lines.append(f"| {env} | {ours:.0f} | {theirs:.0f} | {t_ours / t_sb3:.2f} |")
    return "\n".join(lines)


def markdown(results: list[dict[str, Any]]) -> str:
    """The results table and the logtrick-best / SB3-better wall-clock ratio per env."""
    rows = summary_rows(results)
    header = (
        "| env | system | seeds | solved | env steps to threshold (k) "
        "| training s to threshold | CPU s to threshold | training steps/s | budget | cap s |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        solved = f"{r['solved']}/{r['n']}" + (f" ({r['capped']} capped)" if r["capped"] else "")
        lines.append(f"| {r['env']} | {r['system']} | {r['n']} | {solved} | {r['steps']} | "
                     f"{r['time']} | {r['cpu']} | {r['sps']:,.0f} | {r['budget'] // 1000}k | "
                     f"{r['cap']:.0f} |")  # fmt: skip
    lines += [
        "",
        "| env | logtrick best | SB3 better | ratio of median training s | ratio of median CPU s |",
        "|---|---|---|---:|---:|",
    ]
    for env in dict.fromkeys(r["env"] for r in rows):
        ours = [r for r in rows if r["env"] == env and not r["system"].startswith("sb3")]
        theirs = [r for r in rows if r["env"] == env and r["system"].startswith("sb3")]
        if not ours or not theirs:
            continue
        a = min(ours, key=lambda r: r["median_time"])
        b = min(theirs, key=lambda r: r["median_time"])
        ratio = a["median_time"] / b["median_time"]
        cpu_ratio = a["median_cpu"] / b["median_cpu"]
        lines.append(f"| {env} | {a['system']} ({a['median_time']:.1f} s) | {b['system']} "
                     f"({b['median_time']:.1f} s) | {ratio:.2f} | {cpu_ratio:.2f} |")  # fmt: skip
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per env: eval return against training wall-clock and against env steps, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env in dict.fromkeys(r["env"] for r in results):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        systems = list(dict.fromkeys(r["system"] for r in results if r["env"] == env))
        colors = {s: f"C{i}" for i, s in enumerate(systems)}
        for r in (r for r in results if r["env"] == env and r["curve"]):
            steps, times, returns = zip(*r["curve"])
            label = r["system"] if r["seed"] == min(
                q["seed"] for q in results if q["env"] == env and q["system"] == r["system"]
            ) else None  # fmt: skip
            axes[0].plot(times, returns, color=colors[r["system"]], alpha=0.7, label=label)
            axes[1].plot(steps, returns, color=colors[r["system"]], alpha=0.7)
        for ax, xlabel in zip(axes, ("training wall-clock (s, evaluation excluded; log)",
                                     "env steps")):  # fmt: skip
            if threshold(env) is not None:
                ax.axhline(threshold(env), color="k", ls="--", lw=0.8)
            ax.set_xlabel(xlabel)
        axes[0].set_xscale("log")  # wall-clocks span three decades; ratios read as distances
        every_return = [v for r in results if r["env"] == env for _, _, v in r["curve"]]
        if every_return:  # a few early catastrophic evaluations would squash every curve
            axes[0].set_ylim(bottom=float(np.percentile(every_return, 2)))
        axes[0].set_ylabel("mean return, 20 deterministic episodes")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{env} (one line per seed)")
        fig.tight_layout()
        path = out / f"rl_suite_{env}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
