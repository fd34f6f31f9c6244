"""Command-line options generated from the declared settings (stepedit_core/foundation/settings.py):
flag, help, default, choices (from `Literal` types) and metavar come from each setting's
declaration, grouped in `--help` by the group that declares them."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel

from stepedit_core.foundation.settings import Declared, SettingsGroup, declared, group_title

Parse = Callable[[str], Any]


def key_value(kind: type) -> Parse:
    """STAGE=VALUE, the value converted by `kind`."""

    def parse(text: str) -> tuple[str, Any]:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected STAGE=VALUE, got {text!r}")
        try:
            return name, kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None

    return parse


def value_type(annotation: Any) -> Any:
    """The type a setting's values have, without `None` (and without `Annotated`)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kept[0] if len(kept) == 1 else annotation
    if typing.get_origin(annotation) is typing.Annotated:
        return value_type(typing.get_args(annotation)[0])
    return annotation


def argument(item: Declared, parsers: dict[str, Parse]) -> dict[str, Any]:
    """argparse keywords of one declared setting (without its flag)."""
    setting = item.setting
    kind = value_type(item.field.annotation)
    origin = typing.get_origin(kind)
    # a field the model requires (the judge's kind) is off until given on the command line
    default = None if item.field.is_required() else item.default
    empty = default is None or default is False or default in ((), [], {})
    text = setting.help.replace("%", "%%")  # argparse formats help with %
    if not empty and "default" not in setting.help:  # a command's set_defaults shows too
        text += " (default: %(default)s)"
    found: dict[str, Any] = {"help": text, "dest": item.name}
    if setting.metavar:
        found["metavar"] = setting.metavar
    if kind is bool:
        action = argparse.BooleanOptionalAction if setting.negatable else "store_true"
        return {**found, "action": action, "default": default}
    custom = parsers.get(item.name)
    if origin is dict and custom is not None:  # the whole mapping in one value (JSON)
        return {**found, "type": custom, "default": default}
    if origin in (list, tuple, dict):  # repeatable; a dict from STAGE=VALUE pairs
        element = typing.get_args(kind)[-1] if origin is dict else typing.get_args(kind)[0]
        parse = parsers.get(item.name) or (
            key_value(value_type(element)) if origin is dict else str
        )
        return {**found, "action": "append", "default": [], "type": parse}
    if origin is Literal:
        choices = typing.get_args(kind)
        found.update(choices=choices, type=type(choices[0]))
    else:
        found["type"] = parsers.get(item.name) or kind
    if setting.const is not None:
        found.update(nargs="?", const=setting.const)
    return {**found, "default": default}


def add_setting_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    parsers: dict[str, Parse] | None = None,
    only: Iterable[str] | None = None,
    required: Iterable[str] = (),
    title: str = "job",
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """One option per declared setting that has a flag (or per setting named in `only`), in
    an argument group per settings group (the model's own settings first, under `title`; an
    existing group of the same title takes them); `parsers`: setting name -> parser of one
    value; `required`: settings the command cannot do without; `overrides`: setting name ->
    argparse keywords a command narrows (fewer choices, its own help). A command changes a
    default with `set_defaults`."""
    parsers = parsers or {}
    overrides = overrides or {}
    wanted = None if only is None else set(only)
    needed = set(required)
    for item in declared(model):
        if item.setting is None or item.setting.flag is None:
            continue
        if wanted is not None and item.name not in wanted:
            continue
        keywords = argument(item, parsers)
        if item.name in needed:
            keywords["required"] = True
        narrowed = overrides.get(item.name, {})
        if "choices" in narrowed and not set(narrowed["choices"]) <= set(keywords["choices"]):
            raise ValueError(f"{item.name}: choices {narrowed['choices']} are not all declared")
        keywords.update(narrowed)
        heading = group_title(item.group) if issubclass(item.group, SettingsGroup) else title
        _section(parser, heading).add_argument(item.setting.flag, **keywords)


def _section(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The parser's argument group with this title (settings from two models share one)."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def settings_from_args(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """Setting name -> value of every flagged setting the parser holds (lists of STAGE=VALUE
    pairs become dicts), ready for the model."""
    values: dict[str, Any] = {}
    for item in declared(model):
        flagged = item.setting is not None and item.setting.flag is not None
        if not flagged or not hasattr(args, item.name):
            continue
        value = getattr(args, item.name)
        if isinstance(value, list) and typing.get_origin(value_type(item.field.annotation)) is dict:
            value = dict(value)  # STAGE=VALUE pairs
        values[item.name] = value
    return values


def setting_named(model: type[BaseModel], name: str) -> Declared:
    """The declaration of one setting (KeyError: no such setting)."""
    for item in declared(model):
        if item.name == name:
            return item
    raise KeyError(name)


def choices_of(item: Declared) -> tuple[Any, ...]:
    """The values a `Literal` setting takes."""
    return typing.get_args(value_type(item.field.annotation))


def flag_of(model: type[BaseModel], path: tuple[str | int, ...]) -> str | None:
    """The flag of the setting a validation error's location points at (None: no flag)."""
    for item in declared(model):
        if path[: len(item.path)] == item.path and item.setting is not None:
            return item.setting.flag
    return None
