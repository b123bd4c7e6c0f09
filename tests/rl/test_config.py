"""Config: every field is checked (type and range) when the Config is made; ``parse_field`` reads
a ``--set`` value as the field's declared type."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from logtrick import rl

FIELDS = [f.name for f in dataclasses.fields(rl.Config)]
NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_refuses_a_value_of_the_wrong_kind(field: str) -> None:
    with pytest.raises((TypeError, ValueError), match=rf"^{field}: "):
        rl.Config(**{field: object()})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("env", ""), ("algo", "sac"), ("total_steps", 0), ("total_steps", 1.5), ("seed", -1),
        ("num_envs", 0), ("num_steps", -1), ("vectorization_mode", "threads"),
        ("gamma", 1.01), ("gamma", NAN), ("gae_lambda", -0.1), ("lr", 0.0), ("lr", NAN),
        ("lr", INF), ("anneal_lr", 1), ("hidden", (64, 0)), ("hidden", 64), ("hidden", (64.0,)),
        ("activation", "sigmoid"), ("normalize_obs", "yes"), ("log_std_init", NAN),
        ("baseline", "critic"), ("ent_coef", -0.01), ("ent_coef", INF), ("vf_coef", -1.0),
        ("max_grad_norm", -1.0), ("max_grad_norm", 0.0), ("max_grad_norm", NAN),
        ("update_epochs", 0), ("num_minibatches", 0), ("clip_eps", 0.0), ("clip_eps", -0.2),
        ("clip_value", 0.0), ("target_kl", 0.0), ("target_kl", -1.0), ("target_kl", NAN),
        ("max_kl", 0.0), ("cg_iters", 0), ("cg_damping", -0.1), ("line_search", None),
        ("eval_every", -5), ("eval_episodes", 0), ("target_return", NAN),
        ("checkpoint_every", 0), ("out", ""), ("run_name", "a/b"), ("run_name", ".."),
        ("run_name", ""), ("torch_threads", 0), ("progress", 0), ("extra", [1]),
        ("extra", {"f": object()}),
    ],
)  # fmt: skip
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises((TypeError, ValueError), match=rf"^{field}: "):
        rl.Config(**{field: value})


def test_more_minibatches_than_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="num_minibatches"):
        rl.Config(num_envs=2, num_steps=4, num_minibatches=9)
    rl.Config(num_envs=3, num_steps=5, num_minibatches=4)  # need not divide the batch


def test_good_values_are_accepted() -> None:
    config = rl.Config(max_grad_norm=INF, target_kl=None, clip_value=None, run_name=None,
                       hidden=[32, 32], target_return=-100, lr=1, extra={"note": 1},
                       out=Path("runs"))  # fmt: skip
    assert config.hidden == (32, 32)  # a list is taken as the tuple it stands for
    assert config.out == "runs"  # a Path is taken as its string
    assert rl.Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("lr", "1e-3", 1e-3), ("lr", "2", 2.0), ("total_steps", "1e6", 1_000_000),
        ("total_steps", "200_000", 200_000), ("hidden", "(128, 128)", (128, 128)),
        ("hidden", "64", (64,)), ("hidden", "[32,32]", (32, 32)), ("target_kl", "none", None),
        ("target_kl", "0.02", 0.02), ("anneal_lr", "false", False), ("anneal_lr", "True", True),
        ("max_grad_norm", "inf", INF), ("activation", "relu", "relu"), ("run_name", "None", None),
        ("extra", "{'a': 1}", {"a": 1}),
    ],
)  # fmt: skip
def test_parse_field_reads_the_declared_type(field: str, text: str, value: object) -> None:
    from logtrick.rl.config import parse_field

    assert parse_field(field, text) == value


@pytest.mark.parametrize(
    ("field", "text", "match"),
    [
        ("lr", "abc", r"^lr: expected a float, got 'abc'"),
        ("total_steps", "1.5", r"^total_steps: expected an int"),
        ("hidden", "abc", r"^hidden: expected"),
        ("anneal_lr", "maybe", r"^anneal_lr: expected true or false"),
        ("extra", "3", r"^extra: expected a dict"),
        ("learning_rate", "1", r"learning_rate: unknown Config field.*lr"),
    ],
)
def test_parse_field_errors_name_the_field(field: str, text: str, match: str) -> None:
    from logtrick.rl.config import parse_field

    with pytest.raises(ValueError, match=match):
        parse_field(field, text)


def test_every_field_has_a_parser() -> None:
    from logtrick.rl.config import parse_field

    for field in FIELDS:
        default = getattr(rl.Config(), field)
        text = repr(default) if not isinstance(default, str) else default
        assert parse_field(field, text) == default, field


def test_a_field_is_declared_in_one_place() -> None:
    """Each field's check, BASE value, resume rule and CLI flag come from its declaration
    (``rl.config.option``): the tables are read from the fields, the parser from the flags."""

    from logtrick.cli import build_parser
    from logtrick.rl.config import BASE, FIELD_CHECKS, FLAGS, PRESET, RESUME_FIELDS

    fields = dataclasses.fields(rl.Config)
    assert list(FIELD_CHECKS) == [f.name for f in fields]
    assert [f.name for f in fields if f.default is PRESET and f.name != "algo"] == list(BASE)
    assert all(FIELD_CHECKS[name] is f.metadata["check"] for name, f in zip(FIELD_CHECKS, fields))
    assert {f.name for f in fields if f.metadata["resume"]} == set(RESUME_FIELDS)
    args = build_parser().parse_args(["train"])
    assert all(hasattr(args, flag.dest) for flag in FLAGS.values())


def test_the_rl_guide_holds_the_full_field_reference() -> None:
    """``logtrick train --help`` lists options only; the docs keep every field, its type, its
    one default and its docstring (regenerate: ``python -c "from logtrick.rl.flags import
    sync_docs; sync_docs()"``)."""
    from logtrick.rl.config import FIELD_DOCS
    from logtrick.rl.flags import FIELDS_END, FIELDS_START, fields_markdown

    page = (Path(__file__).parents[2] / "docs" / "rl_guide.md").read_text()
    table = page.split(FIELDS_START + "\n")[1].split("\n" + FIELDS_END)[0]
    assert table == fields_markdown()
    rows = table.splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(FIELD_DOCS)
    assert all(row.count(" | ") == 4 for row in rows)  # five cells: no unescaped "|"


@pytest.mark.parametrize(
    ("field", "shown"),
    [("total_steps", "preset"), ("algo", "preset"), ("lr", "preset"), ("seed", "0"),
     ("workers", "0"), ("ray_address", "none"), ("progress", "on"), ("wandb", "off"),
     ("cg_iters", "10"), ("env", "CartPole-v1")],
)  # fmt: skip
def test_one_default_per_field_preset_where_the_env_decides(field: str, shown: str) -> None:
    from logtrick.rl.flags import field_default

    assert field_default(field) == shown
