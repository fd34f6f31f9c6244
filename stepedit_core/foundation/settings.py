"""Declared settings: each field of a run's configuration says, next to its type and default,
its command-line flag, its help and whether it changes the output.

A config is a tree of `SettingsGroup` models (the run's groups, one group per engine declared
next to the engine). Every leaf field carries a `Setting` in its `Annotated` metadata; from
those declarations come the command-line options (flows/cli.py), the resume fingerprint
(`JobSpec.fingerprint`) and the run-wide part of the incremental key (incremental.py).

A leaf's name is unique across the whole tree: it is the setting's name in run.json, in the
fingerprint and in the key, so the groups can be rearranged without changing any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

# When a setting joins the fingerprint or the key: "always" (settings that joined before the
# rule below existed, so runs recorded with them keep their fingerprints), "when_set" (only
# when it is not at its default: adding a setting leaves earlier runs' fingerprints and keys
# as they were) or "never".
Joins = Literal["always", "when_set", "never"]


@dataclass(frozen=True)
class Setting:
    """How a config field is offered and what it decides.

    `changes_output` must be declared for every field (tests/test_settings.py refuses a field
    without it). By default an output-changing setting joins the fingerprint and the key when
    set; `fingerprint`/`key` override that (`key="never"` for what a row's key already holds,
    like the edits and the seed). `flag`: the option's name; None keeps the setting off the
    command line (set through run.json, deployments or the Python API). `joins_with`: a
    when-set setting joins whenever that other setting joins, whatever its own value.
    `key_name`: settings sharing one enter the key together, as a list in declaration order."""

    help: str
    changes_output: bool
    flag: str | None = None
    metavar: str | None = None
    fingerprint: Joins | None = None
    key: Joins | None = None
    joins_with: str | None = None
    key_name: str | None = None
    negatable: bool = False  # a bool flag that also has --no-FLAG
    const: Any = None  # value of a flag given without one (nargs="?")

    def joins(self, target: Literal["fingerprint", "key"]) -> Joins:
        declared = self.fingerprint if target == "fingerprint" else self.key
        if declared is not None:
            return declared
        if target == "key" and self.fingerprint is not None and self.changes_output:
            return self.fingerprint
        return "when_set" if self.changes_output else "never"


class SettingsGroup(BaseModel):
    """A group of declared settings (its fields are leaves or further groups)."""

    model_config = ConfigDict(extra="forbid")


def group_title(group: type[SettingsGroup]) -> str:
    """The heading of a group in `--help`: the first line of its docstring."""
    return (group.__doc__ or group.__name__).strip().splitlines()[0]


@dataclass(frozen=True)
class Declared:
    """One leaf setting: its name, the groups above it, its field and its declaration."""

    name: str
    path: tuple[str, ...]  # group field names from the root, the leaf's own name last
    group: type[BaseModel]
    field: FieldInfo
    setting: Setting | None  # None only for a field that forgot to declare itself

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)


def _group_type(field: FieldInfo) -> type[SettingsGroup] | None:
    kind = field.annotation
    return kind if isinstance(kind, type) and issubclass(kind, SettingsGroup) else None


def declared(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[Declared]:
    """Every leaf setting of a config tree, depth first in declaration order."""
    for name, field in model.model_fields.items():
        group = _group_type(field)
        if group is not None:
            yield from declared(group, (*path, name))
            continue
        setting = next((m for m in field.metadata if isinstance(m, Setting)), None)
        yield Declared(name, (*path, name), model, field, setting)


def groups(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[str, type]]:
    """(field name, group model) of every group in the tree, depth first."""
    for name, field in model.model_fields.items():
        group = _group_type(field)
        if group is not None:
            yield name, group
            yield from groups(group, (*path, name))


def flat_values(config: BaseModel) -> dict[str, Any]:
    """Leaf name -> value (Python objects, not serialised) of a config tree."""
    found: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, SettingsGroup):
            found.update(flat_values(value))
        else:
            found[name] = value
    return found


def flat_model(
    model: type[BaseModel],
    name: str,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    doc: str | None = None,
) -> type[BaseModel]:
    """A flat model of a config tree's leaves, for interfaces that hold settings by name (a
    deployment's parameters): each leaf keeps its type, constraints, default and help, and a
    name that is no leaf is refused. Group-level checks are the tree's: build the tree from
    the flat model's values (`model(**values)`) before using them."""
    defaults = defaults or {}
    fields: dict[str, Any] = {}
    for item in declared(model):
        if item.name in exclude:
            continue
        kind: Any = item.field.annotation
        if item.field.metadata:  # constraints (ge, le...) and serialisers travel with the type
            kind = Annotated[(kind, *item.field.metadata)]
        help_text = item.setting.help if item.setting is not None else None
        if item.name in defaults:
            default = defaults[item.name]
        elif item.field.is_required():
            default = ...
        else:
            default = item.default
        fields[item.name] = (kind, Field(default, description=help_text))
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


def nest(model: type[BaseModel], flat: dict[str, Any]) -> dict[str, Any]:
    """Leaf-name keyed input (run.json, deployments, keyword arguments) as the tree's nested
    input. Keys that are no leaf stay at the top (a group given whole, or an unknown key the
    model then handles); a leaf given both flat and inside its group keeps the group's value."""
    leaves = {d.name: d.path for d in declared(model)}
    nested = {k: v for k, v in flat.items() if k not in leaves or len(leaves[k]) == 1}
    for key, value in flat.items():
        path = leaves.get(key)
        if path is None or len(path) == 1:
            continue
        node = nested
        for part in path[:-1]:
            child = node.get(part)
            if isinstance(child, BaseModel):  # what it was given, as is (a dump would redact)
                child = {name: getattr(child, name) for name in child.model_fields_set}
            node[part] = child = dict(child or {})
            node = child
        node.setdefault(path[-1], value)
    return nested


def output_settings(
    config: BaseModel, target: Literal["fingerprint", "key"], dumped: dict[str, Any]
) -> dict[str, Any]:
    """The settings that join the resume fingerprint or the incremental key, by the rules the
    fields declare; `dumped` holds the leaves' serialised values (`flat` JSON dump)."""
    leaves = {d.name: d for d in declared(type(config)) if d.setting is not None}
    values = flat_values(config)

    def joins(name: str) -> bool:
        item = leaves[name]
        rule = item.setting.joins(target)
        if item.setting.joins_with is not None and rule == "when_set":
            return joins(item.setting.joins_with)
        if rule == "when_set":
            return values[name] != item.default
        return rule == "always"

    found: dict[str, Any] = {}
    for name, item in leaves.items():
        if not joins(name):
            continue
        group = item.setting.key_name if target == "key" else None
        if group is None:
            found[name] = dumped[name]
        else:
            found.setdefault(group, []).append(dumped[name])
    return found
