"""Test notifier with a hostile admin page: it tries to reach the console's session, the API and
other interfaces, and writes what happened into <pre id="report"> (JSON) for the test to read.

Its config names a ``victim`` interface (another interface of this plugin): the page tries to run
``admin_mark`` there. ``admin_mark`` counts its calls in the interface's state, so the test can check
that the victim's count stayed 0."""

import uuid

from rustbill import sdk

PLUGIN_TYPE = "notifier"


def config_schema():
    return {
        "type": "object",
        "properties": {
            "label": {"type": "string", "title": "Label", "description": "Who this interface is"},
            "victim": {"type": "string", "title": "Victim", "description": "Another interface's id"},
        },
    }


def send(config, message):
    return {"ok": True}


def admin_mark(config):
    # One key per call (calls may run at the same time): admin_marks counts them.
    sdk.state().set(f"mark:{uuid.uuid4().hex}", True)
    return {"label": config.get("label", ""), "args_interface_id": config.get("interface_id")}


def admin_marks(config):
    return {"label": config.get("label", ""), "marks": len(sdk.state().items("mark:"))}


_ATTACK = """<script>
(function () {
  var r = {};
  var victim = document.getElementById("victim").textContent;
  function attempt(name, fn) {
    try { r[name] = "read: " + String(fn()); } catch (e) { r[name] = "blocked: " + e.name; }
  }
  attempt("parentDocument", function () { return parent.document.documentElement.outerHTML.length; });
  attempt("topLocation", function () { return top.location.href; });
  attempt("parentFetch", function () { return typeof parent.fetch; });
  attempt("localStorage", function () { return localStorage.getItem("rustbill.console.lang"); });
  attempt("sessionStorage", function () { return sessionStorage.length; });
  attempt("cookie", function () { return document.cookie; });
  attempt("popup", function () { return window.open("/admin/") === null ? "no window" : "opened"; });
  attempt("topNavigation", function () { top.location.href = "/admin/#/stolen"; return "assigned"; });

  function settle(p) {
    return p.then(function (v) { return {ok: true, value: v}; },
                  function (e) { return {ok: false, code: e.code || e.name, message: String(e.message)}; });
  }
  // Raw messages, for what rustbill.call() does not let a page say.
  var raw = {}, seq = 0;
  window.addEventListener("message", function (ev) {
    var m = ev.data;
    if (ev.source === parent && m && m.type === "rustbill:result" && raw[m.id]) { raw[m.id](m); delete raw[m.id]; }
  });
  function post(msg) {
    return new Promise(function (resolve) {
      msg.id = "raw-" + (++seq);
      raw[msg.id] = resolve;
      parent.postMessage(msg, "*");
      setTimeout(function () { if (raw[msg.id]) { delete raw[msg.id]; resolve({noAnswer: true}); } }, 4000);
    });
  }
  var api = "/rustbill.integration.IntegrationService/CallPluginAction";
  var body = JSON.stringify({interfaceId: victim, function: "admin_mark", argsJson: "{}"});
  Promise.all([
    settle(fetch(api, {method: "POST", headers: {"content-type": "application/json"}, body: body})),
    settle(fetch("/rustbill.identity.IdentityService/RefreshToken", {method: "POST", body: "{}"})),
    settle(new Promise(function (resolve, reject) {
      var x = new XMLHttpRequest();
      try { x.open("POST", api); x.onload = function () { resolve(x.status); };
            x.onerror = function () { reject(new Error("xhr failed")); }; x.send(body); }
      catch (e) { reject(e); }
    })),
    settle(rustbill.call("admin_mark", {})),
    post({type: "rustbill:action", function: "admin_mark", args: {}, interfaceId: victim}),
    post({type: "rustbill:action", function: "admin_mark", args: {}, interface_id: victim}),
    settle(rustbill.call("admin_mark", {interface_id: victim})),
    settle(rustbill.call("send", {message: {}})),
    settle(rustbill.call("health_check", {})),
    settle(rustbill.call("admin_page", {})),
    settle(rustbill.call("admin_mark", {label: "forged"})),
    post({type: "rustbill:call-action", function: "admin_mark", args: {}})
  ]).then(function (v) {
    r.fetchApi = v[0]; r.fetchRefresh = v[1]; r.xhr = v[2]; r.own = v[3]; r.otherInterfaceKey = v[4];
    r.otherInterfaceSnake = v[5]; r.argsInterfaceId = v[6]; r.send = v[7]; r.healthCheck = v[8];
    r.adminPage = v[9]; r.overrideConfig = v[10]; r.oldProtocol = v[11];
    var out = document.getElementById("report");
    out.textContent = JSON.stringify(r, null, 1);
    out.setAttribute("data-done", "1");
  });
})();
</script>"""


def admin_page(config):
    import html

    victim = html.escape(str(config.get("victim", "")))
    label = html.escape(str(config.get("label", "")))
    return {
        "title": "Hostile page",
        "html": "<style>pre{white-space:pre-wrap;font-size:12px}</style>"
        f"<h1>Hostile page of {label}</h1><p id='victim'>{victim}</p><pre id='report'></pre>"
        + sdk.admin_bridge_script()
        + _ATTACK,
    }
