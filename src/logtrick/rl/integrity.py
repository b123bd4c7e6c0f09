"""Trust nothing loaded: checksums of a checkpoint's contents, finite weights, the run it is of.

A checkpoint is a (nested) dict of tensors and plain values. :func:`stamp` adds ``"checksums"``:
a SHA-256 of every tensor's bytes (with its dtype and shape), keyed by its path in the dict, and
one of all the other values together. :func:`verify` recomputes them on load, so bytes damaged
on disk (``torch.load`` reads a damaged tensor without complaint) are an error naming the tensor,
not 75 NaN weights evaluated as if fine. Files written before checksums existed load unverified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from logtrick.rl.errors import CheckpointError

__all__ = ["IDENTITY", "check_finite", "check_identity", "stamp", "verify"]

CHECKSUMS = "checksums"
VALUES = "(values)"
"""The key of the checksum of every value that is not a tensor."""
IDENTITY = ("algo", "seed", "env", "run_id")
"""What identifies a run: a checkpoint records these from its run directory (``config.json``
and ``.run-id``)."""


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs in a fixed order (dict keys sorted by their ``repr``)."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=repr):
            yield from _leaves(value[key], f"{path}/{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        yield path, type(value).__name__  # a list and a tuple of the same values differ
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def _tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype} {tuple(tensor.shape)}".encode())
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().data)  # the buffer, not a copy
    return digest.hexdigest()


def _checksums(state: Mapping[str, Any]) -> dict[str, str]:
    sums, values = {}, hashlib.sha256()
    for path, leaf in _leaves({k: v for k, v in state.items() if k != CHECKSUMS}):
        if isinstance(leaf, torch.Tensor):
            sums[path] = _tensor_digest(leaf)
        else:
            values.update(f"{path}={leaf!r};".encode())
    sums[VALUES] = values.hexdigest()
    return sums


def stamp(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with the checksums of its contents (``"checksums"``)."""
    state = {k: v for k, v in state.items() if k != CHECKSUMS}
    return {**state, CHECKSUMS: _checksums(state)}


def verify(path: Path, state: Mapping[str, Any]) -> None:
    """``CheckpointError`` naming ``path`` and the damaged entries if a checksum differs."""
    saved = state.get(CHECKSUMS)
    if saved is None:
        return  # written before checksums: nothing to check against
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{path}: the checkpoint is damaged (its checksums are unreadable)")
    now = _checksums(state)
    bad = sorted(k for k in set(now) | set(saved) if now.get(k) != saved.get(k))
    if bad:
        named = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"{path}: the checkpoint is damaged ({named} do not match the checksums written "
            "with it); do not use it: restore a copy, or start the run again"
        )


def check_finite(path: Path, state: Mapping[str, Any]) -> None:
    """``CheckpointError`` naming ``path`` and a tensor if a floating-point value is NaN/inf."""
    for name, leaf in _leaves({k: v for k, v in state.items() if k != CHECKSUMS}):
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            if leaf.numel() == 0 or bool(torch.isfinite(leaf.sum())):
                continue  # a NaN or inf makes the sum non-finite: one fast reduction
            bad = int((~torch.isfinite(leaf)).sum())
            if bad:
                raise CheckpointError(
                    f"{path}: the checkpoint holds {bad} NaN or infinite value(s) in {name}; "
                    "a policy with them cannot act. Use an earlier checkpoint or start again"
                )


def check_identity(path: Path, state: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """``CheckpointError`` if the checkpoint records another run than ``config`` (the run
    directory's identity) describes, naming the first field that differs."""
    saved = state.get("run")
    if not isinstance(saved, Mapping):
        return  # written before checkpoints recorded their run
    for field in IDENTITY:
        if field in saved and field in config and saved[field] != config[field]:
            source = path.parent / (".run-id" if field == "run_id" else "config.json")
            raise CheckpointError(
                f"{path}: the checkpoint is of another run: {field} {saved[field]!r} in the "
                f"checkpoint, {config[field]!r} in {source}; was it copied from another run? "
                "Put back this run's own checkpoint, or start a new run"
            )
