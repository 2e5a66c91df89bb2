"""``rustbill plugin new``: a single-file plugin of one type to start from.

The templates (``templates/*.py.tmpl``) define every contract function of their type, a config
schema with a secret field, an admin page and one ``admin_*`` action, with the SDK's shared pieces;
each passes ``rustbill plugin check`` as written (tests/test_plugin_authoring.py keeps it so).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .contract import PLUGIN_TYPES
from .loader import plugin_id_for

__all__ = ["ScaffoldError", "new_plugin", "render_template"]

_TEMPLATE = {
    "first_party_provider": ("provider.py.tmpl", "first-party provider"),
    "upstream_provider": ("provider.py.tmpl", "provider reselling an upstream"),
    "gateway": ("gateway.py.tmpl", "payment gateway"),
    "notifier": ("notifier.py.tmpl", "notification channel"),
}


class ScaffoldError(Exception):
    """The plugin cannot be written; the message says why."""


def render_template(plugin_type: str, name: str) -> str:
    if plugin_type not in _TEMPLATE:
        raise ScaffoldError(f"unknown plugin type {plugin_type!r} (one of {', '.join(PLUGIN_TYPES)})")
    file, kind = _TEMPLATE[plugin_type]
    text = resources.files(__package__).joinpath("templates", file).read_text(encoding="utf-8")
    title = name.replace("_", " ").title()
    return (
        text.replace("__PLUGIN_TYPE__", plugin_type)
        .replace("__KIND__", kind)
        .replace("__TITLE__", title)
        .replace("__NAME__", name)
    )


def new_plugin(plugin_type: str, name: str, folder: Path) -> Path:
    """Write ``folder/name.py`` (making ``folder`` when it does not exist); refuses a name that is not
    a plugin id and an existing file."""
    path = folder / f"{name}.py"
    if plugin_id_for(path) is None:
        raise ScaffoldError(
            f"{name!r} is not a plugin id: lower-case letters, digits and _, starting with a letter or digit"
        )
    text = render_template(plugin_type, name)
    try:
        folder.mkdir(parents=True, exist_ok=True)  # (like ``cargo new``: a new folder is made)
    except FileExistsError:
        raise ScaffoldError(f"{folder} is a file, not a folder") from None
    except OSError as exc:
        raise ScaffoldError(f"cannot make the folder {folder}: {exc.strerror}") from None
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ScaffoldError(f"{path} exists already; choose another name or remove it") from None
    return path
