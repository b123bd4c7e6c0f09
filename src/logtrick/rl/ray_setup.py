r"""The Ray runtime a run with workers joins or starts, and what is checked before any worker
starts: the address answers (:func:`connect`), the env factory loads in a worker process
(:func:`check_env_for_workers`); and the worker's own log (:func:`redirect_stderr`), which the
learner quotes when the worker dies. Imported by :mod:`logtrick.rl.workers` only.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from typing import Any

from logtrick.rl.errors import import_extra

__all__ = [
    "RAY_CONNECT_S",
    "check_env_for_workers",
    "connect",
    "env_label",
    "import_ray",
    "redirect_stderr",
]


RAY_CONNECT_S = 15.0
"""Seconds ``ray_address`` may take to answer before the run fails naming it."""


def import_ray() -> Any:
    """Ray, imported on first use so that the modules using it import without the extra."""
    return import_extra("ray", "distributed", "workers", "collecting on Ray workers")


def connect(address: str | None) -> str | None:
    """Join the Ray runtime at ``address``, or start a private local one (``None``); returns the
    temp dir of a runtime it started (to remove at :meth:`RayCollector.close`), else ``None``.
    A ``HOST:PORT`` that does not answer within :data:`RAY_CONNECT_S` is an error."""
    if import_ray().is_initialized():
        return None
    if address and address != "auto" and "://" not in address:
        _probe(address, RAY_CONNECT_S)
    if address:
        import_ray().init(address=address, include_dashboard=False, log_to_driver=False)
        return None
    temp = tempfile.mkdtemp(prefix="ray-")  # private: no other process finds it with "auto"
    import_ray().init(include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    return temp


def _probe(address: str, wait_s: float) -> None:
    """Fail with a ``ConnectionError`` naming ``address`` unless its port accepts a connection
    within ``wait_s`` (Ray itself retries for ever)."""
    host, _, port = address.rpartition(":")
    deadline, last = time.monotonic() + wait_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0):
                return
        except (OSError, ValueError) as err:
            last = str(err)
        time.sleep(0.5)
    raise ConnectionError(f"ray_address: nothing answers at {address!r} within {wait_s:g} s "
                          f"({last}); start a cluster there (ray start --head) or leave "
                          "ray_address unset for a local runtime")  # fmt: skip


def check_env_for_workers(env: Any) -> None:
    """Refuse, before any worker starts, an env factory or custom env the workers cannot load:
    it is pickled here (cloudpickle) and loaded back in a fresh Ray worker process."""
    if isinstance(env, str):
        return
    from ray import cloudpickle

    try:
        blob = cloudpickle.dumps(env)
    except Exception as err:
        raise ValueError(f"env: {env_label(env)} cannot be sent to Ray workers: pickling it "
                         f"failed ({type(err).__name__}: {err})") from err  # fmt: skip
    try:
        import_ray().get(import_ray().remote(num_cpus=0)(_unpickle).remote(blob), timeout=120)
    except Exception as err:
        cause = getattr(err, "cause", None) or err
        raise ValueError(
            f"env: {env_label(env)} cannot be loaded by Ray workers "
            f"({type(cause).__name__}: {str(cause).splitlines()[-1] if str(cause) else ''}); "
            "define it in an importable module (or the script run), not an interactive session"
        ) from err


def _unpickle(blob: bytes) -> bool:
    from ray import cloudpickle

    cloudpickle.loads(blob)
    return True


def env_label(env: Any) -> str:
    """An env id, or the name of a factory or env class (for messages)."""
    if isinstance(env, str):
        return env
    return getattr(env, "__qualname__", None) or type(env).__name__


def redirect_stderr(log: str | None) -> None:
    """Send this process's stderr (and a fatal signal's traceback) to ``log``, so the learner
    can quote why the worker died; nothing when the file cannot be made (another node)."""
    if log is None:
        return
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return
    os.dup2(fd, 2)
    os.close(fd)
    import faulthandler

    faulthandler.enable()
