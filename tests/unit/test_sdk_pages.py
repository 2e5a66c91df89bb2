"""sdk.admin_html and sdk.item_table, in process: what a provider's admin page is made of."""

from __future__ import annotations

from rustbill import sdk


def test_item_table_escapes_cells_and_offers_the_actions_of_each_status() -> None:
    items = [{"name": "a<b", "status": "running", "mem": 512}, {"name": "c", "status": "gone"}]
    html = sdk.item_table(("Name", "Memory"), items, lambda i: (i["name"], i.get("mem", "")),
                          {"running": (("admin_stop", "Stop"), ("admin_reboot", "Reboot"))})  # fmt: skip
    assert html.startswith("<table><thead><tr><th>Name</th><th>Memory</th><th>Actions</th></tr></thead>")
    assert "<tr><td>a&lt;b</td><td>512</td><td>" in html
    assert '<button type="button" data-action="admin_stop" data-name="a&lt;b">Stop</button>' in html
    assert html.count("<button") == 2  # a status without actions gets none
    assert "<tr><td>c</td><td></td><td></td></tr>" in html


def test_admin_html_puts_the_scripts_last_and_escapes_the_heading() -> None:
    page = sdk.admin_html("KVM", "KVM — qemu+ssh://<host>", ["<p>one</p>", "<p>two</p>"], "<script>x</script>")
    assert page.startswith('<!DOCTYPE html><html><head><meta charset="utf-8"><title>KVM</title><style>')
    assert "<h1>KVM — qemu+ssh://&lt;host&gt;</h1>\n<p>one</p>\n<p>two</p>\n<script>x</script></body></html>" in page


def test_item_list_counts_the_items_under_the_table_and_the_script_binds_its_output() -> None:
    items = [{"name": "a", "status": "stopped"}, {"name": "b", "status": "running"}]
    out = sdk.item_list(("Name",), items, lambda i: (i["name"],), {"stopped": (("admin_start", "Start"),)}, "domain")
    assert out.startswith(
        sdk.item_table(("Name",), items, lambda i: (i["name"],), {"stopped": (("admin_start", "Start"),)})
    )
    assert out.endswith('<p>2 domain(s). Reload the page to see new states.</p><pre id="action-out"></pre>')
    assert '"action-out"' in sdk.ITEM_LIST_JS and "button[data-action]" in sdk.ITEM_LIST_JS


def test_confirm_form_asks_for_the_name_and_escapes_its_text() -> None:
    out = sdk.confirm_form("del", "Delete <it>", "item", "Name (type it)", "<label>x</label>", "Go & delete")
    assert out == (
        '<h2>Delete &lt;it&gt;</h2><form id="del"><input name="item" placeholder="Name (type it)" required>'
        '<label>x</label><button type="submit">Go &amp; delete</button></form><pre id="del-out"></pre>'
    )
    assert sdk.unreachable("libvirt", "no <route>") == (
        '<p class="error"><strong>Cannot reach libvirt:</strong> no &lt;route&gt;</p>'
    )


def test_action_form_offers_its_choices_and_flags_and_the_script_binds_them() -> None:
    one = sdk.action_form("del", "Delete", "item", "Name", [("admin_delete", "Delete", {})], [("force", "a<b")], "Go")
    assert one == sdk.confirm_form(
        "del",
        "Delete",
        "item",
        "Name",
        '<input type="hidden" name="action" value="admin_delete" data-args="{}">'
        '<label><input type="checkbox" name="force"> a&lt;b</label> ',
        "Go",
    )
    several = sdk.action_form("x", "X", "vm", "VM", [("admin_off", "Off", {}), ("admin_rm", "Remove", {"keep": False})])
    assert (
        '<select name="action"><option value="admin_off" data-args="{}">Off</option>'
        '<option value="admin_rm" data-args="{&quot;keep&quot;: false}">Remove</option></select>'
        '<button type="submit">Run</button>'
    ) in several
    assert "form [name=action]" in sdk.ACTION_FORM_JS and '"-out"' in sdk.ACTION_FORM_JS


def test_actions_note_lists_the_admin_functions_of_a_namespace_with_their_docstrings() -> None:
    def admin_stop(config: dict[str, object]) -> None:
        """Stop it: ``{"name": ...}`` <now>.

        Not this paragraph."""

    def admin_list(config: dict[str, object]) -> None:
        pass

    def admin_page(config: dict[str, object]) -> None:
        """The page itself is no action."""

    note = sdk.actions_note(
        {"admin_stop": admin_stop, "helper": len, "admin_page": admin_page, "admin_list": admin_list}
    )
    assert note == (
        "<p>Actions (CallPluginAction; <code>args_json</code> as each says):</p><ul>"
        '<li><code>admin_stop</code> — Stop it: <code>{"name": ...}</code> &lt;now&gt;.</li>'
        "<li><code>admin_list</code></li></ul>"
    )
