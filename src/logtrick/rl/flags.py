"""``logtrick train``'s options, read from the Config fields' :class:`~logtrick.rl.config.Flag`
declarations, and the field reference of the docs.

The help is plain text grouped by :data:`~logtrick.rl.config.GROUPS`, one default per option,
computed here rather than written in the flag's text, so it cannot contradict the field: a field
that an env's preset or space-based defaults may set shows ``preset``; any other shows its value.
A bool field is a ``--x/--no-x`` pair; an option not given leaves the field to the presets (or,
on ``--resume``, to the saved config).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import textwrap
from typing import Any

from logtrick.rl.config import BASE, FIELD_DOCS, FLAGS, GROUPS, PRESET, Config, Flag

__all__ = [
    "ParagraphFormatter",
    "add_train_flags",
    "field_default",
    "fields_markdown",
    "flag_value",
    "preset_fields",
    "train_groups",
]

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def preset_fields() -> frozenset[str]:
    """The fields an env's preset row or space-based defaults may set (their default depends on
    the env: ``preset``)."""
    from logtrick.rl.defaults import COMMON, PER_ALGO
    from logtrick.rl.presets import PRESETS

    names = {"algo", "gamma", "gae_lambda", "eval_every", *COMMON}
    for row in [*PER_ALGO.values(), *(r for table in PRESETS.values() for r in table.values())]:
        names.update(row)
    return frozenset(names)


def _plain_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def field_default(name: str) -> str:
    """The one default shown for field ``name``: ``preset`` where the env decides, else the
    value (``on``/``off`` for bools, ``none`` for ``None``)."""
    f = _FIELDS[name]
    if f.default is PRESET and name in preset_fields():
        return "preset"
    if f.default is PRESET:
        return _plain_value(BASE[name])
    if f.default_factory is not dataclasses.MISSING:
        return _plain_value(f.default_factory())
    return _plain_value(f.default)


def _is_switch(name: str, flag: Flag) -> bool:
    """A bool field's option without ``const``: a ``--x/--no-x`` pair."""
    return flag.const is None and str(_FIELDS[name].type) == "bool"


def train_groups(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One argument group per :data:`~logtrick.rl.config.GROUPS` entry, in order."""
    return {name: parser.add_argument_group(name) for name in GROUPS}


def add_train_flags(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """Add one option per :data:`~logtrick.rl.config.FLAGS` entry to its group."""
    for name, flag in FLAGS.items():
        default = "off" if flag.const is not None else field_default(name)
        text = f"{flag.help} (default: {default})"
        group = groups[flag.group]
        if flag.const is not None:
            group.add_argument(flag.name, action="store_true", default=None, help=text)
        elif _is_switch(name, flag):
            group.add_argument(flag.name, action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(flag.name, choices=flag.choices, metavar=flag.metavar, help=text)


def flag_value(name: str, flag: Flag, value: Any) -> tuple[bool, Any]:
    """Whether the parsed ``value`` of ``flag`` sets field ``name``, and to what."""
    from logtrick.rl.config import parse_field

    if value is None:
        return False, None
    if flag.const is not None:
        return True, flag.const
    if isinstance(value, bool):
        return True, value
    return True, parse_field(name, value)


class ParagraphFormatter(argparse.HelpFormatter):
    """Wraps each blank-line separated paragraph on its own; a paragraph whose lines start with
    two spaces is kept as written (a list)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            if para.startswith("  "):
                out.append(para)
            else:
                words = " ".join(para.split())
                out.append(
                    textwrap.fill(words, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(out)


def sync_docs(path: str = "docs/rl_guide.md") -> None:
    """Rewrite the field table between the ``fields:start`` / ``fields:end`` markers of
    ``path`` (run from the repository root after changing a field)."""
    from pathlib import Path

    page = Path(path)
    head, rest = page.read_text().split(FIELDS_START + "\n")
    _, tail = rest.split(FIELDS_END)
    page.write_text(f"{head}{FIELDS_START}\n{fields_markdown()}\n{FIELDS_END}{tail}")


FIELDS_START, FIELDS_END = "<!-- fields:start -->", "<!-- fields:end -->"


def fields_markdown() -> str:
    """The docs' field reference: a Markdown table of every Config field, its type, its default
    (as ``--help`` shows it), its ``logtrick train`` option and its docstring."""
    rows = ["| field | type | default | option | what it is |", "|---|---|---|---|---|"]
    for name, f in _FIELDS.items():
        flag = FLAGS.get(name)
        option = f"`--set {name}=...`"
        if flag is not None:
            option = (
                f"`{flag.name}`, `--no-{flag.name[2:]}`"
                if _is_switch(name, flag)
                else f"`{flag.name}`"
            )
        doc = re.sub(r":([\w:]+):`([^`]+)`", r"{\1}`\2`", FIELD_DOCS.get(name, ""))
        doc = doc.replace("``", "`").replace("|", "\\|")
        kind = str(f.type).replace("|", "\\|")
        rows.append(f"| `{name}` | `{kind}` | {field_default(name)} | {option} | {doc} |")
    return "\n".join(rows)
