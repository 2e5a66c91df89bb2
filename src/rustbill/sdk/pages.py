"""The frame of an admin page that lists what a provider runs (the built-in kvm and incus pages):
one look for every such page, a table whose rows carry buttons for the actions that fit each item's
status, a form that runs a destructive action once the item's name is typed in, and the note that
names the page's actions. The page still includes ``sdk.admin_bridge_script()`` and its own script
itself, so an author sees every script the page runs; ``ITEM_LIST_JS`` is the part of it that binds
the rows' buttons, ``ACTION_FORM_JS`` the part that binds ``action_form``'s forms."""

from __future__ import annotations

import html
import inspect
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

# Narrow frames (a phone): a table wider than the page scrolls by itself instead of the whole page,
# long words wrap where they can, and inputs never get wider than the page.
PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0;display:block;max-width:100%;overflow-x:auto}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;overflow-wrap:break-word}"
    ".error{color:#a00}.ok{color:#070}pre{background:#f5f5f5;padding:.6em;white-space:pre-wrap}pre:empty{display:none}"
    "button{margin:0 .2em .2em 0}form{margin:.5em 0}input,select{margin:0 .4em .4em 0;max-width:100%}"
    "@media (max-width:600px){body{margin:.6em}h1{font-size:1.4em}h2{font-size:1.15em}}"
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


# The lines of a page's script that make item_list's row buttons run their action on their item,
# showing the result in item_list's <pre id="action-out">.
ITEM_LIST_JS = """document.querySelectorAll("button[data-action]").forEach(function (b) {
  rustbill.bind(b, b.dataset.action, {name: b.dataset.name}, "action-out");
});
"""


def item_list(
    headers: Sequence[str],
    items: Collection[Mapping[str, Any]],
    cells: Callable[[Mapping[str, Any]], Iterable[Any]],
    actions: Mapping[str, Sequence[tuple[str, str]]],
    noun: str,
) -> str:
    """``item_table`` with how many items (``noun``s) there are under it, then the
    ``<pre id="action-out">`` where ``ITEM_LIST_JS`` shows what a row's button did."""
    table = item_table(headers, items, cells, actions)
    return f'{table}<p>{len(items)} {noun}(s). Reload the page to see new states.</p><pre id="action-out"></pre>'


def confirm_form(form_id: str, heading: str, field: str, placeholder: str, controls: str, button: str) -> str:
    """A section for a destructive action: ``heading`` (text), then a form ``form_id`` whose required
    input ``field`` takes the item's name (typed in to confirm), the ``controls`` (HTML) and a submit
    ``button``, then ``<pre id="{form_id}-out">`` for the result. The page's script binds the form."""
    e = html.escape
    return (
        f'<h2>{e(heading)}</h2><form id="{form_id}"><input name="{field}" placeholder="{e(placeholder)}" required>'
        f'{controls}<button type="submit">{e(button)}</button></form><pre id="{form_id}-out"></pre>'
    )


def unreachable(what: str, message: str) -> str:
    """The paragraph a page shows instead of its items when it cannot reach ``what``."""
    return f'<p class="error"><strong>Cannot reach {html.escape(what)}:</strong> {html.escape(message)}</p>'


# The lines of a page's script that bind every action_form: on submit, with the item's name typed in,
# the chosen action runs with {name, the choice's own arguments, each checkbox as true/false}, its
# result shown in the form's <pre id="{form_id}-out">.
ACTION_FORM_JS = """document.querySelectorAll("form [name=action]").forEach(function (chosen) {
  var form = chosen.form;
  function choice() { return chosen.tagName === "SELECT" ? chosen.options[chosen.selectedIndex] : chosen; }
  rustbill.bind(form, function () { return choice().value; }, function () {
    var name = form.querySelector("input[required]").value.trim(), args = JSON.parse(choice().dataset.args);
    if (!name) return false;
    args.name = name;
    form.querySelectorAll("input[type=checkbox]").forEach(function (box) { args[box.name] = box.checked; });
    return args;
  }, form.id + "-out");
});
"""


def action_form(
    form_id: str,
    heading: str,
    field: str,
    placeholder: str,
    choices: Sequence[tuple[str, str, Mapping[str, Any]]],
    flags: Sequence[tuple[str, str]] = (),
    button: str = "Run",
) -> str:
    """``confirm_form`` for one or more destructive actions, bound by ``ACTION_FORM_JS``: ``choices``
    are ``(function, label, args)`` (several: a ``<select name="action">``; one: a hidden input), the
    ``args`` sent with that choice besides the name; ``flags`` are ``(arg, label)`` checkboxes, sent
    as ``true``/``false`` with every choice."""
    e = html.escape

    def chosen(function: str, args: Mapping[str, Any]) -> str:  # what ACTION_FORM_JS reads of a choice
        return f'value="{e(function)}" data-args="{e(json.dumps(dict(args)))}"'

    if len(choices) == 1:  # nothing to choose
        controls = f'<input type="hidden" name="action" {chosen(choices[0][0], choices[0][2])}>'
    else:
        options = "".join(f"<option {chosen(f, args)}>{e(label)}</option>" for f, label, args in choices)
        controls = f'<select name="action">{options}</select>'
    controls += "".join(f'<label><input type="checkbox" name="{e(arg)}"> {e(label)}</label> ' for arg, label in flags)
    return confirm_form(form_id, heading, field, placeholder, controls, button)


def actions_note(namespace: Mapping[str, Any]) -> str:
    """The list under a page that names its actions for callers of CallPluginAction: every
    ``admin_*`` function of ``namespace`` (the plugin's ``globals()``; not ``admin_page``), in the
    order they are defined, with the first paragraph of its docstring (````code```` shown as code)."""
    items = []
    for name, fn in namespace.items():
        if name.startswith("admin_") and name != "admin_page" and callable(fn):
            doc = (inspect.getdoc(fn) or "").split("\n\n", 1)[0].replace("\n", " ")
            doc = re.sub(r"``(.+?)``", r"<code>\1</code>", html.escape(doc, quote=False))
            items.append(f"<li><code>{html.escape(name)}</code>{' — ' + doc if doc else ''}</li>")
    return f"<p>Actions (CallPluginAction; <code>args_json</code> as each says):</p><ul>{''.join(items)}</ul>"
