"""The errors a training run ends with when the user, not the code, has something to fix.

Bad arguments are ``ValueError`` / ``TypeError`` raised at the boundary (:mod:`logtrick.checks`).
The classes here name what else can stop a run; each message says what happened and what to do.
The command line prints any of them (and ``ValueError`` and ``OSError``) as one line with exit
code 2; anything else is a bug and keeps its traceback.

=========================  ========================  ==========================================
error                      also a                    raised when
=========================  ========================  ==========================================
``DivergenceError``        ``FloatingPointError``    the loss, a gradient or a parameter became
                                                     NaN or inf during an update
``RunLockedError``         ``RuntimeError``          another process writes the run directory
``CheckpointError``        ``ValueError``            a checkpoint is missing, empty, unreadable
                                                     or made for another policy
``UnsupportedSpaceError``  ``TypeError``             an observation or action space the
                                                     policies do not handle
``MissingExtraError``      ``ImportError``           a feature needs an optional dependency
                                                     (an extra) that is not installed
``EnvError``               ``ValueError``            the environment cannot be made, breaks
                                                     Gymnasium's API, or raised in ``reset`` /
                                                     ``step``
``WorkerError``            ``RuntimeError``          a Ray worker's env raised, or a worker
                                                     died more often than allowed (exit code 1)
``RankError``              ``RuntimeError``          another torchrun rank died or hung
                                                     (exit code 1)
=========================  ========================  ==========================================

The run ends with the last good checkpoint kept (written, for a worker's failure) and the
message says which; ``exit_code`` is what the command line exits with.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CheckpointError",
    "DivergenceError",
    "EnvError",
    "LogtrickError",
    "MissingExtraError",
    "RankError",
    "RunLockedError",
    "UnsupportedSpaceError",
    "WorkerError",
    "import_extra",
]


class LogtrickError(Exception):
    """Base of the errors that end a run for a reason the user can act on."""

    exit_code = 2
    """What ``logtrick`` exits with: 2 for what the user must change, 1 for a run that failed."""


class DivergenceError(LogtrickError, FloatingPointError):
    """Training produced NaN or inf (loss, gradient or parameters); nothing was saved from it."""


class RunLockedError(LogtrickError, RuntimeError):
    """The run directory is locked by another process writing to it."""


class CheckpointError(LogtrickError, ValueError):
    """A checkpoint cannot be used: missing, empty, unreadable, or made for another policy."""


class UnsupportedSpaceError(LogtrickError, TypeError):
    """An observation or action space the policies do not support."""


class MissingExtraError(LogtrickError, ImportError):
    """A feature needs an optional dependency that is not installed (the message names the
    extra to install)."""


class EnvError(LogtrickError, ValueError):
    """The environment broke: it cannot be made, breaks Gymnasium's API, or raised in
    ``reset``/``step`` (the message names the env, the env index and what the run kept)."""


class WorkerError(LogtrickError, RuntimeError):
    """A Ray rollout worker failed: its env raised (the message names env, worker and step; the
    worker's traceback is in the notes) or it died more often than ``worker_restarts``."""

    exit_code = 1


class RankError(LogtrickError, RuntimeError):
    """Another torchrun rank died or did not answer within ``dist_timeout_s``."""

    exit_code = 1


def import_extra(module: str, extra: str, argument: str, purpose: str) -> Any:
    """``module`` imported, or a :class:`MissingExtraError` naming the ``argument`` that asked for
    it, what it is for and the extra that installs it: the one way an optional dependency is
    imported (on first use, so the modules that need it import without it)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{argument}: {purpose} needs {module} ({err}); install it with "
            f"`pip install 'logtrick[{extra}]'`"
        ) from err
