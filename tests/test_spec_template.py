"""The spec-template check in the plugin contract, called in-process: field types in RustBill's
vocabulary (what its order form draws), the old lowercase names translated, anything else refused."""

from __future__ import annotations

from typing import Any

import pytest

from rustbill.plugins.contract import FIELD_TYPES, ShapeError, check_spec_template

RUSTBILL_TYPES = ("Integer", "String", "Select", "Region", "OsOptions", "Boolean")


def _type_of(key: str, **field: Any) -> str:
    fields = check_spec_template({"fields": [{"key": "cpu_cores"}, {"key": key, **field}]})["fields"]
    return str(fields[1]["field_type"])


def test_the_allowed_names_are_rustbills() -> None:
    assert FIELD_TYPES == RUSTBILL_TYPES


@pytest.mark.parametrize("name", RUSTBILL_TYPES)
@pytest.mark.parametrize("key", ["cpu_cores", "region", "os", "backup"])
def test_rustbill_names_are_kept_as_they_are(key: str, name: str) -> None:
    # even "Select" on the region key: a plugin that says Select means Select
    assert _type_of(key, field_type=name) == name


@pytest.mark.parametrize(
    ("key", "old", "new"),
    [
        ("cpu_cores", "number", "Integer"),
        ("backups", "number", "Integer"),
        ("hostname", "text", "String"),
        ("ipv6", "boolean", "Boolean"),
        ("plan", "select", "Select"),
        ("region", "select", "Region"),
        ("os", "select", "OsOptions"),
        ("region", "text", "String"),  # only select is given a key-specific name
        ("os", "number", "Integer"),
    ],
)
def test_old_lowercase_names_are_translated(key: str, old: str, new: str) -> None:
    assert _type_of(key, field_type=old) == new


@pytest.mark.parametrize("field", [{}, {"field_type": None}, {"field_type": ""}])
def test_no_field_type_is_string(field: dict[str, Any]) -> None:
    assert _type_of("hostname", **field) == "String"


def test_a_whole_old_style_template_comes_out_in_rustbills_names() -> None:
    tpl = check_spec_template(
        {
            "fields": [
                {"key": "cpu_cores", "field_type": "number", "min": 1, "max": 8},
                {"key": "region", "field_type": "select", "options": ["fra1"]},
                {"key": "os", "field_type": "select", "options": ["debian-12"]},
                {"key": "plan", "field_type": "select", "options": ["a", "b"]},
                {"key": "note"},
            ]
        }
    )
    assert [f["field_type"] for f in tpl["fields"]] == ["Integer", "Region", "OsOptions", "Select", "String"]
    assert tpl["fields"][0]["max"] == 8 and tpl["fields"][1]["options"] == ["fra1"]


@pytest.mark.parametrize("name", ["slider", "integer", "Number", "SELECT", "region", "os", "Text ", "3"])
def test_other_names_are_refused_naming_the_field_and_the_allowed_values(name: str) -> None:
    with pytest.raises(ShapeError) as info:
        _type_of("disk_gb", field_type=name)
    assert str(info.value) == (
        f"spec_template field 1 ('disk_gb'): field_type {name!r} is not one of Integer, String, Select, Region, "
        "OsOptions, Boolean (or the older number, text, boolean, select)"
    )


def test_a_field_type_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ShapeError, match=r"spec_template field 1\['field_type'\] must be a string, not list"):
        _type_of("disk_gb", field_type=["Integer"])
    with pytest.raises(ShapeError, match=r"field_type '7' is not one of Integer"):
        _type_of("disk_gb", field_type=7)
