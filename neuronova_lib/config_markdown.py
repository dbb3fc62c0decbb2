"""docs/configuration.md, rendered from the settings object so that it cannot drift.

Every ``NEURONOVA_*`` variable is a field of :class:`~neuronova_lib.config.Settings`;
its name, type, default, limits and description are read from there and nowhere
else. ``neuronova config --markdown > docs/configuration.md`` writes the page;
``tests/test_docs.py`` fails when the committed page differs from this output.
"""

from __future__ import annotations

import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from .config import Settings

#: The command that rewrites the page (the test's failure message quotes it).
REGENERATE = "neuronova config --markdown > docs/configuration.md"

_HEADER = f"""# Configuration

<!-- Generated from neuronova_lib/config.py by `{REGENERATE}`; do not edit by hand. -->

NeuroNova has one settings object, `neuronova_lib.config.Settings`
(pydantic-settings). Each field is read from the environment variable
`NEURONOVA_<FIELD>`; every service, command, test and benchmark takes its
paths, ports and limits from it, and the platform's child processes get the
same values from `neuronova up`. Values that are lists or mappings are
written as JSON. A variable that is not set takes the default below.

Paths derived from the data dir (`NEURONOVA_HOME`) are not variables of their
own: `secrets/`, `logs/`, `run/` (rendered configs, the running platform's
`stack.json`), `quarantine/`, `orthanc-storage/`, and the SQLite database
`neuronova.db` when `NEURONOVA_DATABASE_URL` is unset.

This page is generated: after adding or changing a field, run
`{REGENERATE}` from the repository root.

"""


def _type_name(annotation: Any) -> str:
    """A reader's name for a field's type: `int`, `path`, `JSON list`, `brats | small`."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args]
        return names[0] if len(names) == 1 else " or ".join(names)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        return "JSON list"
    if origin is dict:
        return "JSON object"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _size(value: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2)):
        if value >= factor and value % factor == 0:
            return f" ({value // factor} {unit})"
    return ""


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list, tuple)):
        return f"`{json.dumps(value)}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, int):
        return f"`{value}`{_size(value)}"
    return f"`{value}`"


def _limits(info: FieldInfo) -> str:
    bounds = []
    for item in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    return ", ".join(bounds)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def variable_name(field: str) -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    return f"{prefix}{field}".upper()


def settings_rows() -> list[tuple[str, str, str, str, str]]:
    """(variable, type, default, limits, description) for every settings field, in order."""
    rows = []
    for name, info in Settings.model_fields.items():
        if not info.description:
            raise ValueError(
                f"Settings.{name} has no description: give its Field(...) a description= "
                "(it is the configuration page's only text for it)")
        rows.append((variable_name(name), _type_name(info.annotation), _default(info),
                     _limits(info), _cell(info.description)))
    return rows


def configuration_markdown() -> str:
    """The whole of docs/configuration.md."""
    lines = [_HEADER.rstrip("\n"), "",
             "| variable | type | default | limits | meaning |",
             "|---|---|---|---|---|"]
    for variable, kind, default, limits, description in settings_rows():
        lines.append(f"| `{variable}` | {kind} | {default} | {limits} | {description} |")
    return "\n".join(lines) + "\n"
