"""The docs say what the code does: the built-in plugins' configuration tables (docs/builtin/) are
current, and every config property of a built-in plugin has a title and a description."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import ROOT

from rustbill.plugins import load_plugin


def _gen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_builtin_docs", ROOT / "scripts" / "gen_builtin_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("pid", _gen().BUILTIN)
def test_configuration_table_of_each_builtin_page_is_current(pid: str) -> None:
    gen = _gen()
    text = gen.page(pid).read_text()
    assert gen.render(pid, text) == text, f"docs/builtin/{pid}.md is stale: run python scripts/gen_builtin_docs.py"


@pytest.mark.parametrize("pid", _gen().BUILTIN)
def test_every_config_property_has_title_and_description(pid: str) -> None:
    path = ROOT / "plugins" / f"{pid}.py"
    if not path.exists():
        pytest.fail(f"built-in plugin {pid} is missing")
    props = load_plugin(path, path.read_bytes(), pid).config_schema.get("properties", {})
    assert props
    for key, prop in props.items():
        assert prop.get("title") and prop.get("description"), f"{pid}.{key} lacks a title or description"
