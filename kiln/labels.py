"""A job's or sweep's name and tags as users give them (`--name`, `--tag key=value`), checked.

Base layer: imports only kiln.errors. The limits match the columns of migration 0012.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kiln.errors import SpecError

MAX_NAME_CHARS = 128
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 256
MAX_TAGS = 32  # per job or sweep

# A name starts with a letter so it never reads as a number or an option; it is one word so a
# shell and a `--where "name = '...'"` take it as it is.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Ids are lowercase hex (16 characters) and any 4+ character prefix finds a job: a name made
# only of such characters could shadow, or be shadowed by, an id prefix.
ID_LIKE = re.compile(r"[0-9a-f]{4,}")


@dataclass(frozen=True, slots=True)
class Labels:
    """What a user calls a job or sweep: an optional name (unique per owner) and tags."""

    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.name is None and not self.tags


def check_name(name: str) -> str:
    """`name` if it may name a job or sweep, else a SpecError saying what a name may be."""
    shown = name if len(name) <= 40 and name.isprintable() else repr(name[:40]) + "..."
    if len(name) > MAX_NAME_CHARS:
        raise SpecError(f"--name: at most {MAX_NAME_CHARS} characters (got {len(name)})", "name")
    if not NAME.fullmatch(name):
        raise SpecError(
            f"--name {shown}: a name starts with a letter and holds only letters, digits, "
            "'.', '_' and '-' (e.g. rugged-baseline)", "name",
        )  # fmt: skip
    if ID_LIKE.fullmatch(name):
        raise SpecError(
            f"--name {shown}: looks like a job id (only the hex digits 0-9a-f); add another "
            "character, e.g. run-" + name, "name",
        )  # fmt: skip
    return name


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags if every key and value may be stored, else a SpecError naming the bad one."""
    if len(tags) > MAX_TAGS:
        raise SpecError(f"--tag: at most {MAX_TAGS} tags (got {len(tags)})", "tags")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SpecError("--tag: keys and values are text", "tags")
        shown = key[:40] if key.isprintable() else repr(key[:40])
        if len(key) > MAX_TAG_KEY_CHARS or not TAG_KEY.fullmatch(key):
            raise SpecError(
                f"--tag {shown}: a key starts with a letter or '_' and holds letters, digits, "
                f"'_', '.' and '-' (at most {MAX_TAG_KEY_CHARS} characters)", "tags",
            )  # fmt: skip
        if len(value) > MAX_TAG_VALUE_CHARS or not value.isprintable():
            raise SpecError(
                f"--tag {shown}: a value is printable text of at most {MAX_TAG_VALUE_CHARS} "
                "characters", "tags",
            )  # fmt: skip
    return dict(tags)


def parse_tags(items: Iterable[str]) -> dict[str, str]:
    """`key=value` items (repeatable `--tag`) as a dict; a key given twice is refused."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            shown = item[:40] if item.isprintable() else repr(item[:40])
            raise SpecError(f"--tag {shown}: expected key=value (e.g. study=rugged)", "tags")
        key = key.strip()
        if key in tags:
            raise SpecError(f"--tag {key}: given twice", "tags")
        tags[key] = value
    return check_tags(tags)


def labels_of(name: str | None, tags: Mapping[str, str] | Iterable[str] | None) -> Labels:
    """Labels from a name and tags given as a dict or as `key=value` items, checked."""
    if tags is None:
        checked: dict[str, str] = {}
    elif isinstance(tags, Mapping):
        checked = check_tags(tags)
    elif isinstance(tags, str):
        checked = parse_tags([tags])
    else:
        checked = parse_tags(tags)
    return Labels(None if name is None else check_name(name), checked)


def label_fields(labels: Labels | None) -> dict[str, str | list[str]]:
    """The HTTP API's form fields for labels: `name`, and `tag` repeated as `key=value`."""
    fields: dict[str, str | list[str]] = {}
    if labels is not None and labels.name is not None:
        fields["name"] = labels.name
    if labels is not None and labels.tags:
        fields["tag"] = [f"{k}={v}" for k, v in labels.tags.items()]
    return fields
