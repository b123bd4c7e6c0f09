"""Training configuration and per-environment presets.

``Config`` is one frozen dataclass, a docstring under every field; values derived from others are
properties. A field left out takes the value of the env's preset or defaults, resolved by
:func:`logtrick.rl.presets.resolve` (its default shows as ``PRESET``): ``Config(env=..., ...)``,
:func:`preset` and the command line give the same configuration for the same arguments. Every
field is checked (type and range) when a ``Config`` is made, before anything is created: the
check of each field is one entry of ``FIELD_CHECKS`` (functions of :mod:`logtrick.checks`).
:func:`parse_field` reads a command-line value (``--set lr=1e-3``) as its field's declared type.
``FIELD_DOCS`` holds each field's docstring (read from this file's source), shown by
``help(Config)`` and ``logtrick train --help``.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from logtrick import checks
from logtrick.rl.policies import ACTIVATIONS
from logtrick.rl.presets import (
    BASE,
    DEFAULT_ALGOS,
    PRESETS,
    default_algo,
    is_custom_env,
    preset,
    resolve,
)

__all__ = [
    "ALGOS",
    "DEFAULT_ALGOS",
    "FIELD_CHECKS",
    "FIELD_DOCS",
    "PRESET",
    "PRESETS",
    "RESUME_FIELDS",
    "Config",
    "default_algo",
    "parse_field",
    "preset",
]

ALGOS = ("reinforce", "a2c", "ppo", "npg")


class _Preset:
    """The default of every Config field but ``env`` and ``extra``: "the preset's value"."""

    def __repr__(self) -> str:
        return "PRESET"

    def __reduce__(self) -> str:
        return "PRESET"


PRESET: Any = _Preset()
"""A field whose value is ``PRESET`` takes it from the env's preset or defaults (see
:func:`logtrick.rl.presets.resolve`)."""
RESUME_FIELDS = (
    "total_steps", "stop_at_threshold", "eval_every", "eval_episodes", "target_return",
    "checkpoint_every", "progress", "plot", "tensorboard",
    "workers", "ray_address", "device",
)  # fmt: skip
"""Fields a resumed run may change: when it stops, evaluates and checkpoints, and what it shows.
Every other field defines what is learned and must equal the saved config."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run. Same config + same seed = same learning curve.

    A field not given takes its value from the env's preset (``logtrick presets``), or for an env
    without one from the defaults chosen from its spaces, else from
    :data:`~logtrick.rl.presets.BASE`: ``Config(env="CartPole-v1", algo="reinforce")`` is the
    tuned CartPole REINFORCE, as on the command line.
    """

    env: str = "CartPole-v1"
    """Gymnasium environment id: what ``gymnasium.make`` accepts (``"ns/Env-v0"``,
    ``"module:Env-v0"``); for an env given to :class:`~logtrick.rl.Agent` as an instance or
    factory, ``custom:`` and its import path (a description: loading needs the env again)."""
    algo: str = PRESET
    """One of ``reinforce``, ``a2c``, ``ppo``, ``npg``."""
    total_steps: int = PRESET
    """Budget of environment steps (summed over the parallel envs)."""
    seed: int = PRESET
    """Seeds torch, the environments' resets and the evaluation episodes."""
    num_envs: int = PRESET
    """Parallel environments in the vector env."""
    num_steps: int = PRESET
    """Steps per environment per rollout; a rollout has ``num_envs * num_steps`` transitions."""
    vectorization_mode: str = PRESET
    """``sync`` (one process) or ``async`` (a process per env; for slow envs)."""
    gamma: float = PRESET
    """Discount factor."""
    gae_lambda: float = PRESET
    """GAE λ (a2c, ppo, npg); 1.0 is Monte Carlo advantages."""
    lr: float = PRESET
    """Adam learning rate (of the policy and critic; npg: of the critic only)."""
    anneal_lr: bool = PRESET
    """Decay the learning rate linearly to zero at ``total_steps`` (a run extended on resume
    decays from the rate it had reached to zero at the new budget: it never rises)."""
    hidden: tuple[int, ...] = PRESET
    """Hidden layer sizes of the actor and critic MLPs."""
    activation: str = PRESET
    """Hidden activation: ``tanh`` or ``relu``."""
    normalize_obs: bool = PRESET
    """Normalise observations by a running mean and variance (saved with the policy)."""
    normalize_rewards: bool = PRESET
    """Divide rewards by a running std of the discounted return (value targets on a sane scale)."""
    log_std_init: float = PRESET
    """Initial log standard deviation of Gaussian policies (Box actions)."""
    baseline: str = PRESET
    """reinforce only: ``none``, ``mean`` (batch mean of returns) or ``value`` (learned critic).
    Without a critic nothing can bootstrap an unfinished episode, so with ``none`` and ``mean``
    every rollout runs on until the episodes it began have ended (``whole_episodes``)."""
    normalize_advantages: bool = PRESET
    """Standardise advantages over each (mini)batch."""
    ent_coef: float = PRESET
    """Entropy bonus coefficient."""
    vf_coef: float = PRESET
    """Weight of the value loss in the combined loss."""
    max_grad_norm: float = PRESET
    """Clip the global gradient norm to this (``inf`` disables)."""
    update_epochs: int = PRESET
    """ppo: passes over each rollout; npg: critic epochs."""
    num_minibatches: int = PRESET
    """ppo / npg critic: minibatches per epoch; the valid transitions of a rollout are split
    evenly (sizes differ by at most one)."""
    clip_eps: float = PRESET
    """ppo: clipping range of the probability ratio."""
    clip_value: float | None = PRESET
    """ppo: clipping range of the value update (``None``: no value clipping)."""
    target_kl: float | None = PRESET
    """ppo: stop the epochs of an update after the first whose mean approx-KL exceeds this
    (``None``: never)."""
    max_kl: float = PRESET
    """npg: KL trust region δ of each natural-gradient step."""
    cg_iters: int = PRESET
    """npg: conjugate-gradient iterations."""
    cg_damping: float = PRESET
    """npg: damping added to the Fisher-vector product."""
    line_search: bool = PRESET
    """npg: backtracking line search on surrogate and KL (TRPO); ``False`` is plain NPG."""
    eval_every: int = PRESET
    """Evaluate the deterministic policy every this many env steps (0: never)."""
    eval_episodes: int = PRESET
    """Episodes per evaluation (fixed reset seeds)."""
    stop_at_threshold: bool = PRESET
    """Stop once an evaluation reaches ``target_return`` (or the env's reward threshold)."""
    target_return: float | None = PRESET
    """Return that counts as solved; ``None`` uses the env spec's ``reward_threshold``."""
    checkpoint_every: int = PRESET
    """Write a checkpoint every this many env steps (rounded up to whole rollouts), and at the end.
    Checkpoints leave the environments alone; a resumed run resets them with seeds derived from
    (seed, update), so resuming a checkpoint is deterministic."""
    out: str = PRESET
    """Parent directory of the run directory."""
    run_name: str | None = PRESET
    """Name of the run directory; ``None`` gives ``{env}-{algo}-{seed}`` (characters other than
    letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``)."""
    tensorboard: bool = PRESET
    """Write TensorBoard events when ``tensorboard`` is installed."""
    torch_threads: int = PRESET
    """``torch.set_num_threads`` for the run; small networks are fastest single-threaded."""
    progress: bool = PRESET
    """Show a rich progress bar."""
    plot: bool = PRESET
    """Draw the learning curve (``learning_curve.png`` in the run directory) at the end."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the config (not used by training)."""
    workers: int = 0
    """Ray rollout workers (0: collect in this process). ``num_envs`` is the total: each worker
    steps ``num_envs / workers`` of them (must divide), so the update is the one of the
    in-process run with the same config (:mod:`logtrick.rl.workers`)."""
    ray_address: str | None = None
    """With ``workers``: the Ray cluster to join (``"auto"`` or ``"HOST:PORT"``); ``None`` starts
    a local runtime when none is running."""
    device: str = "cpu"
    """Where the learner runs: ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available);
    rollouts stay on the CPU."""

    def __post_init__(self) -> None:
        self._resolve_presets()
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, FIELD_CHECKS[f.name](f.name, getattr(self, f.name)))
        if self.num_minibatches > self.batch_size:
            raise ValueError(
                f"num_minibatches: {self.num_minibatches} is more than the transitions of a "
                f"rollout, num_envs * num_steps = {self.batch_size}"
            )

    def _resolve_presets(self) -> None:
        """Give every ``PRESET`` field the value :func:`~logtrick.rl.presets.resolve` chooses."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        unset = [name for name, value in given.items() if value is PRESET]
        if not unset:
            return
        env = checks.check_nonempty_str("env", self.env)
        if is_custom_env(env):
            raise ValueError(
                f"env: {env!r} describes an env given as an instance or factory; make the config "
                "with rl.preset(env_instance_or_factory, ...) or rl.Agent(env, ...), or give "
                f"every field ({', '.join(unset)})"
            )
        algo = None if self.algo is PRESET else self.algo
        fields = {k: v for k, v in given.items() if k not in ("env", "algo") and v is not PRESET}
        values = resolve(env, algo, fields)
        for name in unset:
            object.__setattr__(self, name, values[name])

    @property
    def batch_size(self) -> int:
        """Transitions per rollout (more with ``whole_episodes``)."""
        return self.num_envs * self.num_steps

    @property
    def checkpoint_interval(self) -> int:
        """Updates between checkpoints."""
        return max(1, -(-self.checkpoint_every // self.batch_size))

    @property
    def uses_critic(self) -> bool:
        return self.algo != "reinforce" or self.baseline == "value"

    @property
    def whole_episodes(self) -> bool:
        """Rollouts run on until their episodes end: without a critic nothing bootstraps."""
        return not self.uses_critic

    @property
    def name(self) -> str:
        """The run directory's name (a custom env: the last part of its import path)."""
        env = self.env
        if is_custom_env(env):
            env = env.split(":", 1)[1].split(" ")[0].rsplit(".", 1)[-1]
        return self.run_name or re.sub(r"[^\w.-]+", "_", f"{env}-{self.algo}-{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config: unknown fields {sorted(unknown)}")
        return cls(**d)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check`` for a value that may also be ``None``."""
    return lambda name, value: None if value is None else check(name, value)


def _rate(name: str, value: object) -> float:
    return checks.check_in_range(name, value, 0.0, 1.0)


def _json_dict(name: str, value: object) -> dict[str, Any]:
    return checks.check_json(name, checks.check_instance(name, value, dict, "a dict"))  # type: ignore[return-value]


def _choice(*choices: object) -> Callable[[str, Any], Any]:
    return lambda name, value: checks.check_choice(name, value, choices)


FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "env": checks.check_nonempty_str, "algo": _choice(*ALGOS),
    "total_steps": checks.check_positive_int, "seed": checks.check_nonnegative_int,
    "num_envs": checks.check_positive_int, "num_steps": checks.check_positive_int,
    "vectorization_mode": _choice("sync", "async"), "gamma": _rate,
    "gae_lambda": _rate, "lr": checks.check_positive, "anneal_lr": checks.check_bool,
    "hidden": checks.check_int_tuple, "activation": _choice(*ACTIVATIONS),
    "normalize_obs": checks.check_bool, "normalize_rewards": checks.check_bool,
    "log_std_init": checks.check_finite_number,
    "baseline": _choice("none", "mean", "value"),
    "normalize_advantages": checks.check_bool, "ent_coef": checks.check_nonnegative,
    "vf_coef": checks.check_nonnegative,
    "max_grad_norm": partial(checks.check_positive, allow_inf=True),
    "update_epochs": checks.check_positive_int, "num_minibatches": checks.check_positive_int,
    "clip_eps": checks.check_positive, "clip_value": _optional(checks.check_positive),
    "target_kl": _optional(checks.check_positive), "max_kl": checks.check_positive,
    "cg_iters": checks.check_positive_int, "cg_damping": checks.check_nonnegative,
    "line_search": checks.check_bool, "eval_every": checks.check_nonnegative_int,
    "eval_episodes": checks.check_positive_int, "stop_at_threshold": checks.check_bool,
    "target_return": _optional(checks.check_finite_number),
    "checkpoint_every": checks.check_positive_int, "out": checks.check_not_a_file,
    "run_name": _optional(checks.check_path_name), "tensorboard": checks.check_bool,
    "torch_threads": checks.check_positive_int, "progress": checks.check_bool,
    "plot": checks.check_bool, "extra": _json_dict,
    "workers": checks.check_nonnegative_int, "ray_address": _optional(checks.check_nonempty_str),
    "device": _choice("cpu", "cuda", "auto"),
}  # fmt: skip
"""The check of every Config field: ``check(name, value) -> value`` (converted, e.g. a list of
hidden sizes to a tuple); ``TypeError`` / ``ValueError`` naming the field otherwise."""


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError from None


def _parse_int(text: str) -> int:
    value = _literal(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1e6
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return value


def _parse_bool(text: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}  # fmt: skip
    if text.strip().lower() not in words:
        raise ValueError
    return words[text.strip().lower()]


def _parse_ints(text: str) -> tuple[Any, ...]:
    value = _literal(text)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, (tuple, list)):
        raise ValueError
    return tuple(value)


def _parse_dict(text: str) -> dict[str, Any]:
    value = _literal(text)
    if not isinstance(value, dict):
        raise ValueError
    return value


_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "str": (str, "a string"),
    "int": (_parse_int, "an int (e.g. 200000, 200_000 or 2e5)"),
    "float": (float, "a float"),
    "bool": (_parse_bool, "true or false"),
    "tuple[int, ...]": (_parse_ints, "a tuple of ints, e.g. (64, 64)"),
    "dict[str, Any]": (_parse_dict, "a dict, e.g. {'note': 1}"),
}


def parse_field(name: str, text: str) -> Any:
    """The value of Config field ``name`` written as ``text`` (a command line's ``--set``).

    Read as the field's declared type: ints accept ``200_000`` and ``2e5``, bools ``true`` /
    ``false`` (any case, or 1/0, yes/no), optional fields ``none``, hidden sizes ``(64, 64)`` or
    ``64``. The range is checked by :class:`Config` itself.

    Raises:
        ValueError: naming the field, for an unknown field or a value of another type.
    """
    fields = {f.name: f for f in dataclasses.fields(Config)}
    checks.check_known_name(name, list(fields), "Config field")
    kind = str(fields[name].type)
    optional = kind.endswith(" | None")
    parser, what = _PARSERS[kind.removesuffix(" | None")]
    if optional and text.strip().lower() in ("none", "null"):
        return None
    try:
        return parser(text)
    except ValueError:
        what += " or none" if optional else ""
        raise ValueError(f"{name}: expected {what}, got {text!r}") from None


def _field_docs() -> dict[str, str]:
    """Each Config field's docstring, read from this module's source (one line each)."""
    import inspect

    try:
        tree = ast.parse(inspect.getsource(Config))
    except (OSError, TypeError):  # no source (a frozen application): no field docs
        return {}
    body, docs = tree.body[0].body, {}  # type: ignore[attr-defined]
    for node, after in itertools.pairwise(body):
        value = getattr(after, "value", None)
        text = value.value if type(value) is ast.Constant else None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and text:
            docs[node.target.id] = " ".join(str(text).split())
    return docs


FIELD_DOCS: dict[str, str] = _field_docs()
"""Field name -> its docstring (whitespace collapsed)."""


def fields_help(indent: str = "    ", width: int = 88) -> str:
    """Every field with its type, fallback value and docstring (wrapped to ``width``)."""
    import textwrap

    fallbacks = {"env": "'CartPole-v1'", "algo": "the env's: npg on CartPole-v1, else ppo",
                 "extra": "{}"}  # fmt: skip
    lines = []
    for f in dataclasses.fields(Config):
        default = fallbacks.get(f.name, f"preset, else {BASE.get(f.name)!r}")
        lines.append(f"{f.name} ({f.type}; default: {default})")
        doc = FIELD_DOCS.get(f.name, "")
        lines += textwrap.wrap(doc, width, initial_indent=indent, subsequent_indent=indent)
    return "\n".join(lines)


Config.__doc__ = f"{Config.__doc__}\n    Fields::\n\n" + "\n".join(
    "        " + line for line in fields_help().splitlines()
)
