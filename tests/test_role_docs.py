"""Each role's README variable table says what its ``meta/argument_specs.yml`` and
``defaults/main.yml`` say: the same variables in the same order, types, defaults and descriptions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

_ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
ROLES = sorted(spec.parent.parent for spec in _ROLES_DIR.glob("*/meta/argument_specs.yml"))
_TABLE = re.compile(r"<!-- BEGIN VARIABLES \(from meta/argument_specs.yml\) -->\n(.*?)\n<!-- END VARIABLES -->", re.S)


def readme_rows(role: Path) -> list[list[str]]:
    match = _TABLE.search((role / "README.md").read_text())
    assert match, f"{role.name}/README.md has no variable table between the BEGIN/END VARIABLES markers"
    lines = match.group(1).strip().splitlines()
    assert lines[0] == "| Variable | Type | Default | Description |"
    # A cell may hold a Jinja filter, written \| so the table keeps its columns.
    return [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in lines[2:]]


def spec_type(option: dict[str, Any]) -> str:
    kind = option.get("type", "str")
    return f"{kind} of {option['elements']}" if "elements" in option else kind


def shows(cell: str, value: Any) -> bool:
    assert cell.startswith("`") and cell.endswith("`"), cell
    text = cell[1:-1]
    # Strings are shown bare (2_28 would load as a YAML int), everything else as YAML.
    return text == value if isinstance(value, str) and value else yaml.safe_load(text) == value


@pytest.mark.parametrize("role", ROLES, ids=[role.name for role in ROLES])
def test_role_readme_table_matches_argument_specs_and_defaults(role: Path) -> None:
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    rows = readme_rows(role)
    assert [row[0].strip("`") for row in rows] == list(options)
    assert sorted(defaults) == sorted(name for name, option in options.items() if not option.get("required"))
    for name, kind, default, description in rows:
        option = options[name.strip("`")]
        assert kind == spec_type(option), name
        assert description.split(" Choices: ")[0] == option["description"], name
        if not option.get("required"):
            assert shows(default, defaults[name.strip("`")]), name
