"""The ``logtrick`` command line: one function per subcommand, registered in ``COMMANDS``.

``logtrick compare --problem gaussian`` prints the estimator comparison table of a built-in
problem and writes a plot of the variance per estimator. A subcommand is a :class:`Command`
(name, help, a function adding its arguments, a function running it) passed to :func:`register`;
``main`` builds one ``argparse`` subparser per registered command.

Errors the user can act on (``ValueError``, ``OSError`` and :mod:`logtrick.rl.errors`) are printed
as one line with exit code 2 (1 for a run that failed: a worker or rank lost);
``logtrick --traceback ...`` shows their traceback instead. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command.

    Given the ``argv`` it will parse, only the command that ``argv`` names gets its options:
    building the others' would import what they need (torch, for most) for nothing, and
    ``logtrick --help`` answers without torch.
    """
    from logtrick import __version__

    named = [a for a in argv or () if not a.startswith("-")][:1]

    parser = argparse.ArgumentParser(
        prog="logtrick",
        description="The log-derivative trick: gradient estimators and policy-gradient RL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the traceback of an error, not one line"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        if argv is None or [command.name] == named:
            command.add_arguments(child)
        child.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the chosen subcommand."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    from logtrick.rl.errors import LogtrickError
    from logtrick.rl.signals import Terminated, exit_code, terminate_as_interrupt

    try:
        with terminate_as_interrupt(), _one_line_warnings(args.command):
            return int(args.run(args))  # SIGTERM (kill, preemption) is a Ctrl-C
    except (LogtrickError, ValueError, OSError) as err:  # the user's to fix: a message
        if args.traceback:
            raise
        message = " ".join(line.strip() for line in str(err).splitlines()) or repr(err)
        parser.exit(getattr(err, "exit_code", 2), f"logtrick {args.command}: error: {message}\n")
    except KeyboardInterrupt as err:  # outside the loop, or a second signal inside it
        if args.traceback:
            raise
        signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
        name = signal.Signals(signum).name
        parser.exit(
            exit_code(signum),
            f"logtrick {args.command}: stopped by {name}; a run "
            "keeps its last checkpoint (logtrick train --resume RUN_DIR)\n",
        )


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings as ``logtrick CMD: warning: ...`` lines (not file, line number and source)."""

    def show(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> None:
        text = " ".join(str(message).split())
        print(f"logtrick {command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


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


def _compare_problems(args: argparse.Namespace) -> list[Problem]:
    from logtrick.problems import bernoulli_problem, gaussian_problem

    if args.problem == "bernoulli":
        return [bernoulli_problem(target=args.target)]
    return [gaussian_problem(args.function, k) for k in args.k]


def run_compare(args: argparse.Namespace) -> int:
    """``logtrick compare``: print the comparison table(s) and write the variance plot."""
    import torch
    from rich.console import Console

    from logtrick.chooser import applicable_estimators
    from logtrick.diagnostics import compare

    _check_compare_arguments(args)
    torch.set_num_threads(1)
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=120)
    results = []
    for problem in _compare_problems(args):
        rows = compare(
            problem,
            applicable_estimators(problem),
            samples=args.samples,
            repeats=args.repeats,
            seed=args.seed,
        )
        console.print(_rich_table(problem.name, rows, args))
        results.append((problem.name, rows))
    path = _plot(results, args.out / f"compare-{args.problem}.png")
    console.print(f"plot: {path}")
    return 0


def _check_compare_arguments(args: argparse.Namespace) -> None:
    """Each flag by its name, before anything runs (a NaN ``--k`` would fail later as "f(x)")."""
    if args.samples < 2:
        raise ValueError(f"--samples: expected >= 2 (leave-one-out needs 2), got {args.samples}")
    if args.repeats < 4:
        raise ValueError(f"--repeats: expected >= 4 (estimates per variance), got {args.repeats}")
    for flag, values in (("--k", args.k), ("--target", [args.target])):
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{flag}: expected finite numbers, got {bad[0]}")
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed: expected an int in [0, 2**63), got {args.seed}")


def _rich_table(title: str, rows: list[ComparisonRow], args: argparse.Namespace) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from logtrick.diagnostics import table_cells

    headers, cells = table_cells(rows)
    table = Table(
        title=f"{title}  (K={args.samples}, R={args.repeats}, seed={args.seed})",
        caption="sf = score function; every estimator that applies to the problem; variance: "
        "trace over parameters, of one K-sample estimate; f-evals, µs: per estimate; rel. cost: "
        "time against score_function in this run; max|z|: largest |mean - exact| / SE",
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
    from logtrick.rl.presets import PRESETS

    lines = []
    for env, rows in PRESETS.items():
        lines.append(f"{env}: " + ", ".join(f"{k}={v}" for k, v in rows.get("*", {}).items()))
        for algo, values in rows.items():
            if algo != "*":
                lines.append(f"  {algo:<9} " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from logtrick.rl import runs
    from logtrick.rl.config import FIELD_DOCS, RESUME_FIELDS
    from logtrick.rl.flags import ParagraphFormatter, add_train_flags, train_groups
    from logtrick.rl.presets import PRESETS

    p.formatter_class = ParagraphFormatter
    p.usage = "logtrick train [ENV] [--resume RUN_DIR] [OPTION ...] [--set FIELD=VALUE]"
    p.description = (
        "Train a policy-gradient agent on a Gymnasium environment: the same run as "
        "rl.Agent(ENV, algo, **fields).learn() in Python, with the same defaults.\n\n"
        "A default shown as 'preset' comes from the env's tuned preset (logtrick presets: "
        f"{', '.join(PRESETS)}), or for another env from defaults chosen from its spaces."
    )
    p.epilog = (
        "Any other Config field: --set FIELD=VALUE, e.g. --set ent_coef=0.01 "
        "'hidden=(128,128)'. Fields: " + ", ".join(FIELD_DOCS) + ". Each is described "
        "in the RL guide (docs/rl_guide.md, 'Config fields') and by help(logtrick.rl.Config)."
        f"\n\n--resume RUN_DIR continues a run with its saved config; it may change only "
        f"{', '.join(RESUME_FIELDS)} (--steps extends the run)."
        f"\n\nA run directory (OUT/ENV-ALGO-SEED) holds {runs.CONFIG}, {runs.METRICS}, "
        f"{runs.CHECKPOINT} (the last good one), {runs.CURVE} and TensorBoard events."
    )
    groups = train_groups(p)
    run = groups["run"]
    run.add_argument("env", nargs="?", help="Gymnasium env id (default: CartPole-v1)")
    run.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (default: a new run)"
    )
    run.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="any Config field, e.g. --set lr=1e-3 (default: none)",
    )
    add_train_flags(groups)


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields set by the flags given (and ``--set``), parsed to their types:
    ``rl.Config(**train_overrides(args))`` is the run's configuration."""
    from logtrick.rl.config import FLAGS, parse_field
    from logtrick.rl.flags import flag_value

    overrides: dict[str, Any] = {} if args.env is None else {"env": args.env}
    for name, flag in FLAGS.items():
        given, value = flag_value(name, flag, getattr(args, flag.dest))
        if given:
            overrides[name] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set: expected FIELD=VALUE, got {item!r}")
        overrides[key] = parse_field(key, value)
    return overrides


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from logtrick import rl
    from logtrick.rl.agent import train
    from logtrick.rl.signals import exit_code

    overrides = train_overrides(args)
    if args.resume:
        config = dataclasses.replace(rl.load_config(args.resume), **overrides)
        note = _finished(args.resume, config)
        if note:
            print(note)
            return 0
        result = train(config, resume=args.resume)
    else:
        config = rl.Config(**overrides)
        result = train(config)
    if int(os.environ.get("RANK", 0)):  # torchrun: rank 0 reports (and writes) the run
        return 0
    _report(result, config)
    return 0 if result.signal == signal.SIGINT else exit_code(result.signal)


def _finished(run_dir: str, config: Any) -> str | None:
    """The note for ``--resume`` of a run that has no steps left (``None``: it has)."""
    from logtrick.rl import runs
    from logtrick.rl.checkpoint import Counters, finished_note

    counters = Counters(**runs.load_checkpoint(Path(run_dir) / runs.CHECKPOINT)["counters"])
    return finished_note(Path(run_dir), config, counters)


def _report(result: Any, config: Any) -> None:
    """What happened, in the run's own numbers."""
    from logtrick.rl.report import run_summary

    last = result.history[-1] if result.history else {}
    ret = float(last.get("episode_return", math.nan))
    print(f"run directory: {result.run_dir}")
    print(
        f"env steps: {int(last.get('global_step', 0)):,}   training time: "
        f"{last.get('time', 0.0):.1f} s   recent training return: "
        + (f"{ret:.1f}" if math.isfinite(ret) else "none (no episode has ended yet)")
    )
    if result.solved_at_step is not None:
        target = "target return" if config.target_return is not None else "threshold"
        print(
            f"solved: {config.eval_episodes} deterministic episodes reached the {target} at "
            f"{result.solved_at_step:,} steps, {result.solved_at_time:.1f} s of training"
        )
    if result.interrupted:
        name = signal.Signals(result.signal).name
        print(
            f"stopped by {name}; checkpoint saved. Continue: logtrick train --resume "
            f"{result.run_dir}"
        )
    print(run_summary(result.run_dir))


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by logtrick train")
    p.add_argument(
        "--episodes", type=int, default=20, metavar="N", help="episodes to run (default: 20)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=10_000,
        metavar="N",
        help="reset seed of the first episode; episode i uses N + i (default: 10000)",
    )
    p.add_argument(
        "--stochastic", action="store_true", help="sample actions, not the mode (default: off)"
    )
    p.add_argument(
        "--video",
        metavar="DIR",
        help="also record the episodes as .mp4 files in DIR; needs rgb_array rendering and "
        "pip install logtrick[video] (default: no video)",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from logtrick import rl
    from logtrick.checks import check_positive_int, check_seed

    check_positive_int("--episodes", args.episodes)
    check_seed("--seed", args.seed)
    env = rl.load_config(args.run_dir).env
    policy = rl.load(args.run_dir)
    # load gives an ActorCritic or a ModulePolicy (typed nn.Module); evaluate calls only act()
    mean, std = rl.evaluate(
        policy,  # type: ignore[arg-type]
        env,
        episodes=args.episodes,
        seed=args.seed,
        deterministic=not args.stochastic,
    )
    print(f"{env}: {mean:.2f} ± {std:.2f} over {args.episodes} episodes")
    if args.video:
        from logtrick.rl.video import record_video

        deterministic = not args.stochastic
        videos = record_video(policy, env, args.video, args.episodes, args.seed, deterministic)
        print(f"{len(videos)} videos in {args.video}")
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
