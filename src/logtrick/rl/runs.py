"""The run directory: config, metrics CSV, TensorBoard events, learning-curve plot, checkpoints.

Every file that must survive a crash is written atomically: to a temporary file in the same
directory, flushed and fsynced, then renamed over the target (``os.replace`` is atomic on POSIX),
so a reader sees the old file or the new one, never half of one; a temporary file orphaned by a
killed writer is removed when the run next starts (:func:`lock_run_dir`). Checkpoints are plain
tensors and numbers, loadable with ``torch.load(weights_only=True)``: loading one runs no code.
They carry checksums of their contents and the identity of their run (:mod:`.integrity`):
:func:`load_checkpoint` refuses damaged bytes, NaN/inf weights and a checkpoint of another run.

One process writes a run directory at a time: :func:`lock_run_dir` holds an exclusive
``flock`` on its ``.lock`` file while training (the kernel releases it when the process exits,
crash or not); a second writer gets :class:`~logtrick.rl.errors.RunLockedError`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from logtrick.checks import check_nonempty_str
from logtrick.rl import integrity
from logtrick.rl.errors import CheckpointError, RunLockedError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MetricsLogger",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "lock_run_dir",
    "new_run_dir",
    "plot_learning_curve",
    "read_config",
    "read_metrics",
    "remove_orphans",
    "run_identity",
    "save_checkpoint",
    "write_config",
]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.csv"
CURVE = "learning_curve.png"
LOCK = ".lock"
RUN_ID = ".run-id"
"""The file naming the run (a random id written with its first ``config.json``): a checkpoint
records it, so one copied in from another run of the same config is refused too."""
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
"""The names :func:`atomic_write_bytes` gives its temporary files (``tempfile.mkstemp``)."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:  # a full disk, a quota, ...
            raise OSError(
                err.errno,
                f"{err.strerror}: writing {path} failed; the previous {path.name} is kept",
            ) from err
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """``torch.save`` a dict of tensors and plain values atomically, with checksums of its
    contents; a run directory's ``checkpoint.pt`` also records the run (:func:`run_identity`)."""
    path, state = Path(path), dict(state)
    identity = run_identity(path.parent) if path.name == CHECKPOINT else None
    if identity is not None:
        state["run"] = identity
    buffer = io.BytesIO()
    torch.save(integrity.stamp(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs) and check it.

    Raises:
        CheckpointError: no file, an empty one, one ``torch.load`` cannot read safely (not a
            checkpoint, cut short, or holding objects other than tensors and numbers), one whose
            contents do not match their checksums, with NaN/inf values, or a run directory's
            checkpoint that records another run than its ``config.json``.
    """
    path = Path(path)
    state = _read_checkpoint(path)
    integrity.verify(path, state)
    integrity.check_finite(path, state)
    if path.name == CHECKPOINT and (path.parent / CONFIG).is_file():
        _read_json(path.parent / CONFIG)  # damaged: a message naming it
        integrity.check_identity(path, state, run_identity(path.parent) or {})
    return {k: v for k, v in state.items() if k != integrity.CHECKSUMS}


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (the run has not written one yet)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, pickle.UnpicklingError, RuntimeError (zip), ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: the checkpoint cannot be read ({reason})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return state


@contextlib.contextmanager
def lock_run_dir(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (its ``.lock`` file) for the ``with`` block.

    The lock is an ``flock`` on an open file: released when the block ends, and by the kernel
    when the process dies. The file records the holder's process id for the error message.

    Raises:
        RunLockedError: another process holds the lock.
    """
    path = Path(run_dir) / LOCK
    with path.open("a+") as fh:
        _flock(fh, Path(run_dir))
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        remove_orphans(run_dir)
        yield


def _flock(fh: Any, run_dir: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        raise RunLockedError(
            f"{run_dir}: another process (pid {holder}) is writing to this run; "
            "wait for it to end, or stop it, before resuming"
        ) from None


def remove_orphans(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write_bytes` left in ``run_dir``
    (call it holding the run's lock: no writer is active); returns what was removed."""
    removed = []
    for path in Path(run_dir).iterdir():
        if _TEMP.match(path.name) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def new_run_dir(out: str | os.PathLike[str], name: str) -> Path:
    """A fresh directory ``out/name``, else ``out/name-1``, ``-2``, ... (nothing is overwritten)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    candidate, i = root / name, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1
            candidate = root / f"{name}-{i}"


class MetricsLogger:
    """Append rows to ``metrics.csv`` (flushed each row) and, if installed, TensorBoard; with
    ``wandb_config`` (the run's config) also to Weights & Biases (:mod:`logtrick.rl.tracking`).

    On resume, rows written after the checkpoint's update are dropped first (``keep_until``), so
    the CSV of a resumed run equals the CSV of an uninterrupted one.
    """

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool = True,
        keep_until: int | None = None,
        wandb_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = run_dir / METRICS
        self.fields: list[str] | None = None
        if keep_until is not None and self.path.exists():
            rows = [r for r in read_metrics(self.path) if int(float(r["update"])) <= keep_until]
            self.fields = list(rows[0]) if rows else None
            text = io.StringIO()
            if rows:
                writer = csv.DictWriter(text, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            atomic_write_text(self.path, text.getvalue())
        self.file = self.path.open("a", newline="")
        self.writer: csv.DictWriter[str] | None = None
        if self.fields is not None:
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
        self.tb = _summary_writer(run_dir) if tensorboard else None
        self.wandb: Any = None
        if wandb_config is not None:
            from logtrick.rl.tracking import WandbRun

            self.wandb = WandbRun(run_dir, wandb_config, atomic_write_text)

    def log(self, row: Mapping[str, float]) -> None:
        if self.writer is None:
            self.fields = list(row)
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
            self.writer.writeheader()
        self.writer.writerow({k: row.get(k, "") for k in self.fields or []})
        self.file.flush()
        if self.tb is not None:
            step = int(row.get("global_step", 0))
            for key, value in row.items():
                if key not in ("global_step", "update") and value == value:  # skip NaN
                    self.tb.add_scalar(key, float(value), step)
        if self.wandb is not None:
            self.wandb.log(row)

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters in TensorBoard's HPARAMS tab (no-op without
        TensorBoard), with ``episode_return`` and ``eval_return`` as its metrics. Values other
        than numbers, strings and bools are written as their ``repr``."""
        if self.tb is None:
            return
        from torch.utils.tensorboard.summary import hparams

        plain = {
            k: v if isinstance(v, (int, float, str, bool)) else repr(v) for k, v in config.items()
        }
        metrics = {"episode_return": 0.0, "eval_return": 0.0}  # names only: the scalars log them
        writer = self.tb._get_file_writer()
        for summary in hparams(plain, metrics):
            writer.add_summary(summary)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.close()


def _summary_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` as dicts of strings. A last row cut short (the writer died
    mid-row: no final newline, or too few cells) is dropped with a warning."""
    path = Path(path)
    with path.open(newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    cut = bool(lines) and not lines[-1].endswith(("\n", "\r"))
    if cut:
        lines = lines[:-1]
    rows = list(csv.DictReader(lines))
    if rows and (None in rows[-1].values() or None in rows[-1]):
        rows, cut = rows[:-1], True
    if cut:
        warnings.warn(
            f"{path}: dropped its last row, cut short (the writer was stopped "
            "mid-row); the run continues from its checkpoint",
            stacklevel=2,
        )
    return rows


def plot_learning_curve(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
    threshold: float | None = None,
) -> None:
    """Training return and evaluation return vs env steps and vs wall-clock (two panels), with
    the env's reward ``threshold`` as a dashed line, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, xkey, label in ((axes[0], "global_step", "env steps"),
                            (axes[1], "time", "wall-clock (s)")):  # fmt: skip
        for key, style, name in (("episode_return", "-", "training (recent episodes)"),
                                 ("eval_return", "o-", "evaluation (deterministic)")):  # fmt: skip
            points = [(float(r[xkey]), float(r[key])) for r in rows if _number(r.get(key))]
            if points:
                ax.plot(*zip(*points), style, lw=1.5, ms=3, label=name)
        if threshold is not None:
            ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("episode return")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _number(value: Any) -> bool:
    """Whether a metrics cell holds a finite number (not empty, not NaN)."""
    try:
        return value is not None and value != "" and float(value) == float(value)
    except (TypeError, ValueError):
        return False


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The config saved in a run directory's ``config.json``.

    Raises:
        FileNotFoundError: no ``config.json``.
        ValueError: one that is not a JSON object (cut short, damaged, or not a config).
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: no {CONFIG} in {Path(run_dir)}; is it a run directory?")
    return _read_json(path)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ValueError`` naming the file and what to do otherwise."""
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = f"not valid JSON ({err})"
    else:
        if isinstance(value, dict):
            return value
        reason = f"a JSON {type(value).__name__}, not an object of config fields"
    raise ValueError(
        f"{path}: the run's config is damaged: {reason}; restore it from a copy of the run "
        "directory, or write it again (its fields: logtrick.rl.Config), then resume"
    )


def run_identity(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What identifies the run in ``run_dir``: ``algo``, ``seed`` and ``env`` from its
    ``config.json``, ``run_id`` from its ``.run-id``; ``None`` without a readable config."""
    try:
        saved = _read_json(Path(run_dir) / CONFIG)
    except (OSError, ValueError):
        return None
    identity = {k: saved[k] for k in integrity.IDENTITY if k in saved}
    with contextlib.suppress(OSError):
        identity["run_id"] = (Path(run_dir) / RUN_ID).read_text().strip()
    return identity


def write_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    """``config.json``, atomically; a new run also gets its ``.run-id``."""
    if not (run_dir / RUN_ID).is_file():
        atomic_write_text(run_dir / RUN_ID, uuid.uuid4().hex[:16] + "\n")
    atomic_write_text(run_dir / CONFIG, json.dumps(dict(config), indent=2, sort_keys=True) + "\n")


def check_path(name: str, value: object) -> str:
    """``value`` is a non-empty str or an ``os.PathLike``; returns it as a str."""
    return check_nonempty_str(name, os.fspath(value) if isinstance(value, os.PathLike) else value)


def check_path_name(name: str, value: object) -> str:
    """``value`` can name one entry of a directory: non-empty, no path separator, not . or .."""
    check_nonempty_str(name, value)
    if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:  # type: ignore[operator]
        raise ValueError(
            f"{name}: expected a file or directory name (no '/', not '.' or '..'), got {value!r}"
        )
    return value  # type: ignore[return-value]


def check_not_a_directory(name: str, value: object) -> str:
    """``value`` (a str or ``os.PathLike``) names a file to write, not an existing directory."""
    path = check_path(name, value)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a directory; expected a file path (e.g. agent.pt)")
    return path


def check_not_a_file(name: str, value: object) -> str:
    """``value`` (a str or ``os.PathLike``) names a directory, or nothing yet (it is created
    later): not a file."""
    path = check_path(name, value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a file; expected a directory (or a new path)")
    return path
