"""The frame of an admin page that lists what a provider runs (the built-in kvm and incus pages):
one look for every such page, and a table whose rows carry buttons for the actions that fit each
item's status. The page still includes ``sdk.admin_bridge_script()`` and its own script itself, so
an author sees every script the page runs."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.error{color:#a00}"
    "pre{background:#f5f5f5;padding:.6em;white-space:pre-wrap}button{margin:0 .2em .2em 0}"
    "form{margin:.5em 0}input,select{margin:0 .4em .4em 0}"
)


def admin_html(title: str, heading: str, parts: Iterable[str], scripts: str) -> str:
    """A whole page: ``title`` and ``heading`` are text (escaped here), ``parts`` are HTML, and
    ``scripts`` (the bridge first) come last, once the elements they bind exist."""
    e = html.escape
    head = f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>{PAGE_STYLE}</style>'
    return "\n".join([head + "</head><body>", f"<h1>{e(heading)}</h1>", *parts, scripts + "</body></html>"])


def item_table(
    headers: Sequence[str],
    items: Iterable[Mapping[str, Any]],
    cells: Callable[[Mapping[str, Any]], Iterable[Any]],
    actions: Mapping[str, Sequence[tuple[str, str]]],
) -> str:
    """A table of items (dicts with ``name`` and ``status``): ``cells(item)`` as text, then an
    Actions column of buttons ``<button data-action=… data-name=…>`` for ``actions[status]``
    (``(function, label)`` pairs), which the page's script binds to run the action on the item."""
    e = html.escape
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{e(str(v))}</td>" for v in cells(item))
        + "<td>"
        + "".join(
            f'<button type="button" data-action="{a}" data-name="{e(item["name"])}">{label}</button>'
            for a, label in actions.get(item["status"], ())
        )
        + "</td></tr>"
        for item in items
    )
    head = "".join(f"<th>{e(h)}</th>" for h in (*headers, "Actions"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
