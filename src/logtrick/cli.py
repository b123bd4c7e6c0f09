"""The ``logtrick`` command line: one function per subcommand, registered in ``COMMANDS``.

``logtrick compare --problem gaussian`` prints the estimator comparison table of a built-in
problem and writes a plot of the variance per estimator. A subcommand is a :class:`Command`
(name, help, a function adding its arguments, a function running it) passed to :func:`register`;
``main`` builds one ``argparse`` subparser per registered command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time: `logtrick --help` need not load torch
    from rich.table import Table

    from logtrick.diagnostics import ComparisonRow
    from logtrick.problems import Problem

__all__ = ["COMMANDS", "Command", "build_parser", "main", "register"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument builder and runner."""

    name: str
    """What the user types after ``logtrick``."""
    help: str
    """One-line description shown by ``logtrick --help``."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the subcommand's options to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Runs it with the parsed arguments; returns the exit status."""


COMMANDS: dict[str, Command] = {}
"""Registered subcommands, by name."""


def register(command: Command) -> Command:
    """Add ``command`` to :data:`COMMANDS` (a later registration of the same name replaces it)."""
    COMMANDS[command.name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    from logtrick import __version__

    parser = argparse.ArgumentParser(
        prog="logtrick",
        description="The log-derivative trick: gradient estimators and policy-gradient RL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen subcommand."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ValueError as err:  # bad input named by the library: a message, not a traceback
        parser.exit(2, f"logtrick {args.command}: error: {err}\n")


# --------------------------------------------------------------------------- compare


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--problem",
        choices=["gaussian", "bernoulli"],
        default="gaussian",
        help="built-in problem (default: gaussian)",
    )
    parser.add_argument(
        "--function",
        choices=["square", "exp", "cos"],
        default="square",
        help="gaussian: f = (x-k)^2, exp(-k x^2) or cos(k x) (default: square)",
    )
    parser.add_argument(
        "--k", type=float, nargs="+", default=[0.0], help="gaussian: one table per k (default: 0)"
    )
    parser.add_argument(
        "--target", type=float, default=0.499, help="bernoulli: t in E[(b - t)^2] (default: 0.499)"
    )
    parser.add_argument("--samples", type=int, default=8, help="K draws per estimate (default: 8)")
    parser.add_argument(
        "--repeats", type=int, default=300, help="R estimates per estimator (default: 300)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/compare"),
        help="folder for the variance plot (default: runs/compare)",
    )


def compare_estimators(problem: Problem) -> dict[str, tuple[object, object]]:
    """The estimators ``logtrick compare`` measures on ``problem``: label -> (estimator, baseline).

    The score function (``sf``) plain and with each baseline (moving average, leave-one-out, the
    per-parameter optimal scale, and the exact mean as an oracle constant), and the pathwise
    estimator where f is differentiable and the distribution has ``rsample``.
    """
    import logtrick as lt

    sf = lt.ScoreFunction()
    table: dict[str, tuple[object, object]] = {
        "score_function": (sf, None),
        "sf + moving_average": (sf, lt.MovingAverage()),
        "sf + leave_one_out": (sf, lt.LeaveOneOut()),
        "sf + optimal_scale": (sf, lt.OptimalScale(problem.params)),
    }
    mean = problem.exact_value()
    if mean is not None:
        table["sf + exact E[f] (oracle)"] = (sf, lt.Constant(mean))
    if problem.differentiable and problem.dist().has_rsample:
        table["pathwise"] = (lt.Pathwise(), None)
    return table


def _compare_problems(args: argparse.Namespace) -> list[Problem]:
    from logtrick.problems import bernoulli_problem, gaussian_problem

    if args.problem == "bernoulli":
        return [bernoulli_problem(target=args.target)]
    return [gaussian_problem(args.function, k) for k in args.k]


def run_compare(args: argparse.Namespace) -> int:
    """``logtrick compare``: print the comparison table(s) and write the variance plot."""
    import torch
    from rich.console import Console

    from logtrick.diagnostics import compare

    if args.samples < 2:
        raise ValueError(f"--samples: expected >= 2 (leave-one-out needs 2), got {args.samples}")
    torch.set_num_threads(1)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=120)
    results = []
    for problem in _compare_problems(args):
        rows = compare(
            problem,
            compare_estimators(problem),
            samples=args.samples,
            repeats=args.repeats,
            seed=args.seed,
        )
        console.print(_rich_table(problem.name, rows, args))
        results.append((problem.name, rows))
    path = _plot(results, args.out / f"compare-{args.problem}.png")
    console.print(f"plot: {path}")
    return 0


def _rich_table(title: str, rows: list[ComparisonRow], args: argparse.Namespace) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from logtrick.diagnostics import table_cells

    headers, cells = table_cells(rows)
    table = Table(
        title=f"{title}  (K={args.samples}, R={args.repeats}, seed={args.seed})",
        caption="sf = score function; variance: trace over parameters, of one K-sample "
        "estimate; max|z|: largest |mean - exact| / SE",
        box=box.SIMPLE_HEAD,
    )
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for cell in cells:
        table.add_row(*(Text(c) for c in cell))  # Text: "E[f]" is not rich markup
    return table


def _plot(results: list[tuple[str, list[ComparisonRow]]], path: Path) -> Path:
    """Horizontal bars of the total variance (log scale, ± SE) per estimator, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(7, 0.5 + 0.45 * len(results[0][1]) * n + 0.6 * n))
    for ax, (title, rows) in zip([axes] if n == 1 else axes, results):
        names = [r.name for r in rows]
        positive = [r.stats.total_variance for r in rows if r.stats.total_variance > 0]
        floor = min(positive, default=1.0) / 10  # a zero variance is drawn as a short bar
        values = [max(r.stats.total_variance, floor) for r in rows]
        errors = [r.stats.total_variance_se for r in rows]
        ax.barh(names, values, xerr=errors, color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("variance of the gradient estimate (trace)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


register(
    Command(
        "compare",
        "compare gradient estimators on a built-in problem",
        _compare_arguments,
        run_compare,
    )
)


# --------------------------------------------------------------------------- train, evaluate


def _presets_table() -> str:
    from logtrick.rl.config import PRESETS

    lines = []
    for env, rows in PRESETS.items():
        lines.append(f"{env}: " + ", ".join(f"{k}={v}" for k, v in rows.get("*", {}).items()))
        for algo, values in rows.items():
            if algo != "*":
                lines.append(f"  {algo:<9} " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def _parse_value(text: str) -> object:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from logtrick.rl.config import ALGOS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (
        "Train a policy-gradient agent on a Gymnasium environment. Defaults come from the "
        "per-environment presets below, then Config's defaults; flags and --set override them."
    )
    p.epilog = "presets (env: common to every algo; then per algo):\n" + _presets_table()
    p.add_argument("env", nargs="?", default="CartPole-v1", help="Gymnasium env id")
    p.add_argument("--algo", choices=ALGOS, default="ppo")
    p.add_argument("--steps", type=int, help="env-step budget (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--envs", type=int, help="parallel environments (default: the preset's)")
    p.add_argument("--out", default="runs", help="parent directory of the run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--async-envs", action="store_true", help="one process per environment")
    p.add_argument(
        "--eval-every",
        type=int,
        default=5_000,
        help="evaluate 20 deterministic episodes every N env steps; 0: never",
    )
    p.add_argument(
        "--no-stop",
        action="store_true",
        help="keep training after an evaluation reaches the reward threshold",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="any Config field, e.g. --set lr=1e-3 'hidden=(128,128)'",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {
        "seed": args.seed,
        "out": args.out,
        "eval_every": args.eval_every,
        "stop_at_threshold": not args.no_stop,
        "progress": not args.no_progress,
    }
    if args.steps:
        overrides["total_steps"] = args.steps
    if args.envs:
        overrides["num_envs"] = args.envs
    if args.async_envs:
        overrides["vectorization_mode"] = "async"
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set: expected FIELD=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    return overrides


def run_train(args: argparse.Namespace) -> int:
    from logtrick import rl
    from logtrick.rl.config import Config

    if args.resume:
        extend = Config(total_steps=args.steps) if args.steps else None
        result = rl.train(extend, resume=args.resume)
    else:
        fields = {f for f in Config.__dataclass_fields__}
        overrides = _train_overrides(args)
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"--set: unknown Config fields {unknown}; see logtrick train --help")
        result = rl.train(rl.preset(args.env, args.algo, **overrides))
    last = result.history[-1] if result.history else {}
    print(f"run directory: {result.run_dir}")
    print(
        f"env steps: {int(last.get('global_step', 0)):,}   training time: "
        f"{last.get('time', 0.0):.1f} s   recent training return: "
        f"{last.get('episode_return', float('nan')):.1f}"
    )
    if result.solved_at_step is not None:
        print(
            f"solved: 20 deterministic episodes reached the threshold at "
            f"{result.solved_at_step:,} steps, {result.solved_at_time:.1f} s of training"
        )
    if result.interrupted:
        print(f"interrupted; checkpoint saved. Continue: logtrick train --resume {result.run_dir}")
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by logtrick train")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=10_000, help="reset seed of the first episode")
    p.add_argument("--stochastic", action="store_true", help="sample actions, not the mode")


def run_evaluate(args: argparse.Namespace) -> int:
    from logtrick import rl
    from logtrick.logging import read_config

    env = read_config(args.run_dir)["env"]
    policy = rl.load(args.run_dir)
    mean, std = rl.evaluate(
        policy, env, episodes=args.episodes, seed=args.seed, deterministic=not args.stochastic
    )
    print(f"{env}: {mean:.2f} ± {std:.2f} over {args.episodes} episodes")
    return 0


def run_presets(args: argparse.Namespace) -> int:
    print(_presets_table())
    return 0


register(Command("train", "train a policy on a Gymnasium environment", _train_arguments, run_train))
register(
    Command(
        "evaluate",
        "evaluate a trained policy from its run directory",
        _evaluate_arguments,
        run_evaluate,
    )
)
register(
    Command(
        "presets", "show the per-environment default hyperparameters", lambda p: None, run_presets
    )
)


if __name__ == "__main__":
    sys.exit(main())
