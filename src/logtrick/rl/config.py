"""Training configuration and per-environment presets.

``Config`` is one frozen dataclass, a docstring under every field; values derived from others are
properties. A field left out takes the value of the env's preset or defaults, resolved by
:func:`logtrick.rl.presets.resolve` (its default shows as ``PRESET``): ``Config(env=..., ...)``,
:func:`preset` and the command line give the same configuration for the same arguments. Every
field is checked (type and range) when a ``Config`` is made, before anything is created.

A field is declared in one place, with :func:`option`: its check (functions of
:mod:`logtrick.checks`), its :data:`BASE` value, whether a resumed run may change it and its
``logtrick train`` flag (:class:`Flag`). ``FIELD_CHECKS``, :data:`BASE`, :data:`RESUME_FIELDS`
and :data:`FLAGS` are read from these declarations.
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
from typing import TYPE_CHECKING, Any

from logtrick import checks
from logtrick.rl.policies import ACTIVATIONS
from logtrick.rl.presets import ALGOS, is_custom_env, resolve

if TYPE_CHECKING:
    import gymnasium as gym
from logtrick.rl.runs import check_not_a_file, check_path_name

__all__ = [
    "BASE",
    "DEVICES",
    "FIELD_CHECKS",
    "FIELD_DOCS",
    "FLAGS",
    "GROUPS",
    "PRESET",
    "RESUME_FIELDS",
    "Config",
    "Flag",
    "fields_help",
    "option",
    "parse_field",
    "preset",
]


class _Preset:
    """The default of every Config field but ``env`` and ``extra``: "the preset's value"."""

    def __repr__(self) -> str:
        return "PRESET"

    def __reduce__(self) -> str:
        return "PRESET"


PRESET: Any = _Preset()
"""A field whose value is ``PRESET`` takes it from the env's preset or defaults (see
:func:`logtrick.rl.presets.resolve`)."""
_NO_BASE: Any = object()
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Flag:
    """A Config field's ``logtrick train`` option: ``--name VALUE`` parsed as the field's type
    (:func:`parse_field`), or with ``const`` a switch that sets the field to ``const``."""

    name: str
    help: str
    """Its ``--help`` text, plain (no reST); the default is appended by
    :func:`logtrick.rl.flags.field_default`, so the text never states one."""
    group: str
    """The section of ``--help`` it is listed under: one of :data:`GROUPS`."""
    const: Any = None
    """A switch's value (``None``: the option takes a value; a bool field is ``--x/--no-x``)."""
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute argparse stores it under."""
        return self.name.removeprefix("--").replace("-", "_")


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check`` for a value that may also be ``None``."""
    return lambda name, value: None if value is None else check(name, value)


def _rate(name: str, value: object) -> float:
    return checks.check_in_range(name, value, 0.0, 1.0)


def _json_dict(name: str, value: object) -> dict[str, Any]:
    return check_json(name, checks.check_instance(name, value, dict, "a dict"))  # type: ignore[return-value]


def _choice(*choices: object) -> Callable[[str, Any], Any]:
    return lambda name, value: checks.check_choice(name, value, choices)


def option(
    check: Callable[[str, Any], Any],
    base: Any = _NO_BASE,
    *,
    default: Any = PRESET,
    factory: Callable[[], Any] | None = None,
    resume: bool = False,
    flag: Flag | None = None,
) -> Any:
    """A Config field, declared in one place: its ``check(name, value) -> value`` (converted, or
    ``TypeError`` / ``ValueError`` naming the field), its :data:`BASE` value (what a field left
    to the presets falls back to), whether a resumed run may change it (:data:`RESUME_FIELDS`)
    and its command-line ``flag``. ``default``: the value when not given (``PRESET``: resolved
    from the env's preset or defaults)."""
    meta = {"check": check, "base": base, "resume": resume, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


VECTOR_ENVS = ("gymnasium", "envpool")
"""Who may step the envs (:attr:`Config.vector_env`)."""

GROUPS = ("run", "algorithm", "network", "scale-out", "logging")
"""The sections of ``logtrick train --help``, in order."""
_RUN, _ALGO, _NET, _SCALE, _LOG = GROUPS


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run. Same config + same seed = same learning curve.

    A field not given takes its value from the env's preset (``logtrick presets``), or for an env
    without one from the defaults chosen from its spaces, else from :data:`BASE`:
    ``Config(env="CartPole-v1", algo="reinforce")`` is the tuned CartPole REINFORCE, as on the
    command line.
    """

    env: str = option(checks.check_nonempty_str, default="CartPole-v1")
    """Gymnasium environment id: what ``gymnasium.make`` accepts (``"ns/Env-v0"``,
    ``"module:Env-v0"``); for an env given to :class:`~logtrick.rl.Agent` as an instance or
    factory, ``custom:`` and its import path (a description: loading needs the env again)."""
    algo: str = option(
        _choice(*ALGOS),
        flag=Flag("--algo", "policy-gradient algorithm", _ALGO, choices=ALGOS),
    )
    """One of ``reinforce``, ``a2c``, ``ppo``, ``npg``."""
    total_steps: int = option(
        checks.check_positive_int,
        200_000,
        resume=True,
        flag=Flag("--steps", "env-step budget, e.g. 200000 or 2e5", _RUN, metavar="N"),
    )
    """Budget of environment steps (summed over the parallel envs)."""
    seed: int = option(checks.check_seed, 0, flag=Flag("--seed", "random seed", _RUN, metavar="N"))
    """Seeds torch, the environments' resets and the evaluation episodes."""
    num_envs: int = option(
        checks.check_positive_int,
        8,
        flag=Flag("--envs", "parallel environments, over all workers", _ALGO, metavar="N"),
    )
    """Parallel environments in the vector env."""
    num_steps: int = option(checks.check_positive_int, 128)
    """Steps per environment per rollout; a rollout has ``num_envs * num_steps`` transitions."""
    vectorization_mode: str = option(
        _choice("sync", "async"),
        "sync",
        flag=Flag("--async-envs", "one process per environment", _SCALE, const="async"),
    )
    """``sync`` (one process) or ``async`` (a process per env; for slow envs)."""
    gamma: float = option(_rate, 0.99, flag=Flag("--gamma", "discount factor", _ALGO, metavar="X"))
    """Discount factor."""
    gae_lambda: float = option(_rate, 0.95)
    """GAE λ (a2c, ppo, npg); 1.0 is Monte Carlo advantages."""
    lr: float = option(
        checks.check_positive, 3e-4, flag=Flag("--lr", "Adam learning rate", _ALGO, metavar="X")
    )
    """Adam learning rate (of the policy and critic; npg: of the critic only)."""
    anneal_lr: bool = option(checks.check_bool, True)
    """Decay the learning rate linearly to zero at ``total_steps`` (a run extended on resume
    decays from the rate it had reached to zero at the new budget: it never rises)."""
    hidden: tuple[int, ...] = option(
        checks.check_int_tuple,
        (64, 64),
        flag=Flag("--hidden", "hidden layer sizes, e.g. 64,64", _NET, metavar="SIZES"),
    )
    """Hidden layer sizes of the actor and critic MLPs."""
    activation: str = option(
        _choice(*ACTIVATIONS),
        "tanh",
        flag=Flag("--activation", "hidden activation", _NET, choices=tuple(ACTIVATIONS)),
    )
    """Hidden activation: ``tanh`` or ``relu``."""
    normalize_obs: bool = option(checks.check_bool, False)
    """Normalise observations by a running mean and variance (saved with the policy)."""
    normalize_rewards: bool = option(checks.check_bool, False)
    """Divide rewards by a running std of the discounted return (value targets on a sane scale)."""
    log_std_init: float = option(checks.check_finite_number, 0.0)
    """Initial log standard deviation of Gaussian policies (Box actions)."""
    baseline: str = option(_choice("none", "mean", "value"), "value")
    """reinforce only: ``none``, ``mean`` (batch mean of returns) or ``value`` (learned critic).
    Without a critic nothing can bootstrap an unfinished episode, so with ``none`` and ``mean``
    every rollout runs on until the episodes it began have ended (``whole_episodes``)."""
    normalize_advantages: bool = option(checks.check_bool, True)
    """Standardise advantages over each (mini)batch."""
    ent_coef: float = option(checks.check_nonnegative, 0.0)
    """Entropy bonus coefficient."""
    vf_coef: float = option(checks.check_nonnegative, 0.5)
    """Weight of the value loss in the combined loss."""
    max_grad_norm: float = option(partial(checks.check_positive, allow_inf=True), 0.5)
    """Clip the global gradient norm to this (``inf`` disables)."""
    update_epochs: int = option(checks.check_positive_int, 4)
    """ppo: passes over each rollout; npg: critic epochs."""
    num_minibatches: int = option(checks.check_positive_int, 4)
    """ppo / npg critic: minibatches per epoch; the valid transitions of a rollout are split
    evenly (sizes differ by at most one)."""
    clip_eps: float = option(checks.check_positive, 0.2)
    """ppo: clipping range of the probability ratio."""
    clip_value: float | None = option(_optional(checks.check_positive), None)
    """ppo: clipping range of the value update (``None``: no value clipping)."""
    target_kl: float | None = option(_optional(checks.check_positive), None)
    """ppo: stop the epochs of an update after the first whose mean approx-KL exceeds this
    (``None``: never)."""
    max_kl: float = option(checks.check_positive, 0.01)
    """npg: KL trust region δ of each natural-gradient step."""
    cg_iters: int = option(checks.check_positive_int, 10)
    """npg: conjugate-gradient iterations."""
    cg_damping: float = option(checks.check_nonnegative, 0.1)
    """npg: damping added to the Fisher-vector product."""
    line_search: bool = option(checks.check_bool, True)
    """npg: backtracking line search on surrogate and KL (TRPO); ``False`` is plain NPG."""
    eval_every: int = option(
        checks.check_nonnegative_int,
        5_000,
        resume=True,
        flag=Flag(
            "--eval-every",
            "evaluate eval_episodes deterministic episodes every N env steps; 0: never",
            _RUN,
            metavar="N",
        ),
    )
    """Evaluate the deterministic policy every this many env steps (0: never)."""
    eval_episodes: int = option(checks.check_positive_int, 20, resume=True)
    """Episodes per evaluation (fixed reset seeds)."""
    stop_at_threshold: bool = option(
        checks.check_bool,
        True,
        resume=True,
        flag=Flag("--stop", "stop once an evaluation reaches the reward threshold", _RUN),
    )
    """Stop once an evaluation reaches ``target_return`` (or the env's reward threshold)."""
    target_return: float | None = option(_optional(checks.check_finite_number), None, resume=True)
    """Return that counts as solved; ``None`` uses the env spec's ``reward_threshold``."""
    checkpoint_every: int = option(checks.check_positive_int, 50_000, resume=True)
    """Write a checkpoint every this many env steps (rounded up to whole rollouts), and at the end.
    Checkpoints leave the environments alone; a resumed run resets them with seeds derived from
    (seed, update), so resuming a checkpoint is deterministic."""
    out: str = option(
        check_not_a_file,
        "runs",
        flag=Flag("--out", "parent directory of the run directory", _LOG, metavar="DIR"),
    )
    """Parent directory of the run directory."""
    run_name: str | None = option(_optional(check_path_name), None)
    """Name of the run directory; ``None`` gives ``{env}-{algo}-{seed}`` (characters other than
    letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``)."""
    tensorboard: bool = option(
        checks.check_bool,
        True,
        resume=True,
        flag=Flag("--tensorboard", "write TensorBoard events in the run directory", _LOG),
    )
    """Write TensorBoard events when ``tensorboard`` is installed."""
    torch_threads: int = option(checks.check_positive_int, 1)
    """``torch.set_num_threads`` for the run; small networks are fastest single-threaded."""
    progress: bool = option(
        checks.check_bool,
        True,
        resume=True,
        flag=Flag("--progress", "show a progress bar", _LOG),
    )
    """Show a rich progress bar."""
    plot: bool = option(checks.check_bool, True, resume=True)
    """Draw the learning curve (``learning_curve.png`` in the run directory) at the end."""
    extra: dict[str, Any] = option(_json_dict, factory=dict)  # noqa: RUF009  (a field())
    """Free-form notes stored with the config (not used by training)."""
    workers: int = option(
        checks.check_nonnegative_int,
        default=0,
        resume=True,
        flag=Flag(
            "--workers",
            "Ray rollout workers sharing --envs; 0: collect in this process",
            _SCALE,
            metavar="N",
        ),
    )
    """Ray rollout workers (0: collect in this process). ``num_envs`` is the total: each worker
    steps ``num_envs / workers`` of them (must divide), so the update is the one of the
    in-process run with the same config (:mod:`logtrick.rl.workers`)."""
    ray_address: str | None = option(
        _optional(checks.check_nonempty_str),
        default=None,
        resume=True,
        flag=Flag(
            "--ray-address",
            "Ray cluster to join: auto or HOST:PORT (with --workers); none: a local one",
            _SCALE,
            metavar="ADDR",
        ),
    )
    """With ``workers``: the Ray cluster to join (``"auto"`` or ``"HOST:PORT"``); ``None`` starts
    a local runtime when none is running."""
    device: str = option(
        _choice(*DEVICES),
        default="cpu",
        resume=True,
        flag=Flag("--device", "learner device; auto: cuda when available", _SCALE, choices=DEVICES),
    )
    """Where the learner runs: ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available);
    rollouts stay on the CPU."""
    worker_timeout_s: float = option(
        checks.check_positive,
        default=120.0,
        resume=True,
        flag=Flag(
            "--worker-timeout",
            "seconds a Ray worker may take for one rollout before it is restarted",
            _SCALE,
            metavar="S",
        ),
    )
    """Seconds a Ray worker may take for one rollout before it is killed and restarted (RLlib's
    ``sample_timeout_s``); raise it for slow simulators."""
    worker_restarts: int = option(
        checks.check_nonnegative_int,
        default=3,
        resume=True,
        flag=Flag(
            "--worker-restarts",
            "restarts of a failing Ray worker in a row before it counts as lost",
            _SCALE,
            metavar="N",
        ),
    )
    """Restarts of one Ray worker in a row (no rollout in between) before it counts as lost
    (RLlib's ``max_num_env_runner_restarts``; 0: a failure is not retried)."""
    worker_failure: str = option(
        _choice("stop", "continue"),
        default="stop",
        resume=True,
        flag=Flag(
            "--worker-failure",
            "when a Ray worker is lost: stop (the last checkpoint kept) or continue without it",
            _SCALE,
            choices=("stop", "continue"),
        ),
    )
    """When a Ray worker is lost: ``"stop"`` ends the run (the last good checkpoint kept), or
    ``"continue"`` goes on with the other workers' envs (RLlib's ``ignore_env_runner_failures``)."""
    dist_timeout_s: float = option(
        checks.check_positive,
        default=600.0,
        resume=True,
    )
    """Seconds a torchrun rank waits for the others in a collective before it ends the run with a
    one-line error (torch's default is 30 minutes); ``--set dist_timeout_s=S``."""
    wandb: bool = option(
        checks.check_bool,
        default=False,
        resume=True,
        flag=Flag("--wandb", "also log metrics and config to Weights & Biases", _LOG),
    )
    """Mirror the metrics and config TensorBoard gets to Weights & Biases (``pip install
    logtrick[wandb]``; project ``WANDB_PROJECT``, else ``logtrick``; ``WANDB_MODE=offline``
    writes locally)."""
    vector_env: str = option(
        _choice(*VECTOR_ENVS),
        default="gymnasium",
        flag=Flag(
            "--vector-env",
            "who steps the envs: Gymnasium's vector env, or EnvPool's C++ threads "
            "(pip install 'logtrick[envpool]')",
            _SCALE,
            choices=VECTOR_ENVS,
        ),
    )
    """Who steps the environments: ``"gymnasium"`` (its vector env, ``vectorization_mode``) or
    ``"envpool"`` (EnvPool's C++ threads, ``pip install 'logtrick[envpool]'``; ids EnvPool
    registers, e.g. MuJoCo ``-v4``/``-v5``), with the same autoreset, truncation and seeds."""
    overlap: bool = option(
        checks.check_bool,
        default=False,
        flag=Flag(
            "--overlap", "collect the next rollout while the learner updates (policy lag 1)", _SCALE
        ),
    )
    """Collect the next rollout while the learner updates on the last one: in a forked child
    process (Gymnasium's envs, a CPU policy), a second thread (EnvPool, a GPU), or on the Ray
    workers (with ``workers``). The rollout is then one update behind (policy lag 1), corrected by
    importance weights from the policy that acted to the one before the update (for ppo the
    decoupled objective: :func:`~logtrick.rl.update.ppo_loss`). Off by default (strictly
    on-policy): on two cores it about halves a MuJoCo run's wall-clock, but the lag cost
    Hopper-v5 most of its return (BENCHMARKS.md §11). Not with several torchrun ranks."""

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
        values = resolve(env, algo, fields, BASE)
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


def preset(
    env: str | gym.Env | Callable[[], gym.Env] = "CartPole-v1",
    algo: str | None = None,
    **overrides: Any,
) -> Config:
    """``Config`` for ``env``/``algo``: its ``PRESETS`` row, or for an env without one the
    defaults chosen from its spaces and time limit (:func:`logtrick.rl.defaults.default_overrides`),
    with ``overrides`` applied last; :func:`~logtrick.rl.presets.resolve` says how. ``algo=None``
    is :func:`~logtrick.rl.presets.default_algo` of ``env``. ``preset(env, algo, **f) ==
    Config(env=env, algo=algo, **f)`` for an env id; an instance or factory is described by
    :func:`~logtrick.rl.presets.describe_env`."""
    return Config(**resolve(env, algo, overrides, BASE))


_FIELDS = dataclasses.fields(Config)
FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {f.name: f.metadata["check"] for f in _FIELDS}
"""The check of every Config field: ``check(name, value) -> value`` (converted, e.g. a list of
hidden sizes to a tuple); ``TypeError`` / ``ValueError`` naming the field otherwise."""
BASE: dict[str, Any] = {
    f.name: f.metadata["base"] for f in _FIELDS if f.metadata["base"] is not _NO_BASE
}
"""The value of every field left to the presets that neither the caller nor the env's preset or
defaults set. A new run evaluates 20 deterministic episodes every 5,000 env steps and stops once
they reach the env's reward threshold."""
RESUME_FIELDS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata["resume"])
"""Fields a resumed run may change: when it stops, evaluates and checkpoints, what it shows, and
where it runs. Every other field defines what is learned and must equal the saved config."""
FLAGS: dict[str, Flag] = {f.name: f.metadata["flag"] for f in _FIELDS if f.metadata["flag"]}
"""Field name -> its ``logtrick train`` option."""


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

    fallbacks = {"algo": "the env's: npg on CartPole-v1, else ppo", "extra": "{}"}
    lines = []
    for f in _FIELDS:
        if f.name in fallbacks:
            default = fallbacks[f.name]
        else:
            default = f"preset, else {BASE[f.name]!r}" if f.default is PRESET else repr(f.default)
        lines.append(f"{f.name} ({f.type}; default: {default})")
        doc = FIELD_DOCS.get(f.name, "")
        lines += textwrap.wrap(
            doc, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )
    return "\n".join(lines)


Config.__doc__ = f"{Config.__doc__}\n    Fields::\n\n" + "\n".join(
    "        " + line for line in fields_help().splitlines()
)


def check_json(name: str, value: object) -> object:
    """``value`` can be written as JSON (dicts with string keys, lists, numbers, strings, ...)."""
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected values JSON can hold, got {value!r} ({err})") from None
    return value
