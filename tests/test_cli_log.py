"""The operator's log of command-line changes: every user, token, API key, secrets and balance change
made with ``rustbill`` writes one INFO line on stderr, in the server's log format, naming what changed
and who made it — and never the password, token or key itself."""

from __future__ import annotations

import getpass
import json
import re
from typing import Any

import helpers
from helpers import ServerProcess, unique

# The server's text format: "2026-01-02 03:04:05,678 INFO rustbill.x: message"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .+$")


def run_cli(server: ServerProcess, *args: str, stdin: str | None = None, **env: str) -> Any:
    """``rustbill ARGS`` against the server's database, as an operator runs it (a process of its own,
    see helpers.run_cli); must succeed."""
    res = helpers.run_cli(list(args), cwd=server.workdir, env={**server.env, **env}, stdin=stdin)
    assert res.returncode == 0, res.stderr
    return res


def info_line(res: Any) -> str:
    """A command's one INFO line: the change, in the server's format and change log
    (``rustbill.audit``, as interface changes), naming who made it."""
    lines = [line for line in res.stderr.splitlines() if " INFO " in line]
    assert len(lines) == 1, res.stderr
    assert LINE.match(lines[0]) and " INFO rustbill.audit: " in lines[0], lines[0]
    assert lines[0].endswith(" by cli:" + getpass.getuser()), lines[0]
    return lines[0]


def change_line(server: ServerProcess, *args: str, stdin: str | None = None) -> str:
    return info_line(run_cli(server, *args, stdin=stdin))


def test_every_cli_change_is_one_info_line_without_secrets(server: ServerProcess) -> None:
    # the server's own lines have the same shape
    assert any(LINE.match(line) for line in server.log.splitlines() if " INFO rustbill" in line)

    name = unique("ops")
    password = "pw-" + unique("secret")
    line = change_line(server, "user", "create", name, "--password", password)
    assert f"user {name} created (role customer" in line and "with a password" in line and password not in line

    res = run_cli(server, "token", "create", "--user", name)
    token = res.stdout.strip()
    line = info_line(res)
    assert f"access token issued to user {name} (valid 86400 s)" in line and token not in line

    res = run_cli(server, "apikey", "create", "--user", name, "--name", "ci deploys")
    key = res.stdout.strip()
    prefix = key.split("_")[1]
    line = info_line(res)
    assert f"API key {prefix} created for user {name} (name 'ci deploys')" in line and key not in line
    assert key.split("_", 2)[2] not in res.stderr

    assert f"API key {prefix} revoked" in change_line(server, "apikey", "revoke", prefix)
    assert f"every token of user {name} revoked" in change_line(server, "token", "revoke", "--user", name)
    new_password = "pw-" + unique("again")
    line = change_line(server, "user", "passwd", name, "--password-stdin", stdin=new_password + "\n")
    assert f"password of user {name} changed" in line and new_password not in line
    assert f"user {name} disabled" in change_line(server, "user", "disable", name)
    assert f"user {name} enabled" in change_line(server, "user", "enable", name)

    line = change_line(server, "balance", "credit", name, "12.50", "--note", "bank ref 1")
    assert re.search(rf"balance of {name} credited 12\.50 \(now 12\.50, entry [0-9a-f-]+\)", line), line
    line = change_line(server, "balance", "debit", name, "2.25")
    assert f"balance of {name} debited 2.25 (now 10.25" in line
    assert f"credit limit of {name} set to 5.00" in change_line(server, "balance", "limit", name, "5")
    assert "secrets rotated (the secrets of" in change_line(server, "secrets", "rotate")

    # reading changes nothing and logs nothing; a refused change logs nothing either
    for args in (("user", "list"), ("apikey", "list"), ("balance", "show", name)):
        assert " INFO " not in server.cli(*args).stderr
    refused = server.cli("user", "create", name, check=False)
    assert refused.returncode == 1 and " INFO " not in refused.stderr


def test_cli_lines_follow_the_json_log_format(server: ServerProcess) -> None:
    name = unique("ops")
    server.cli("user", "create", name)
    res = run_cli(server, "user", "disable", name, RUSTBILL_LOG__FORMAT="json")
    [entry] = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    assert entry["level"] == "INFO" and entry["logger"] == "rustbill.audit"
    who = getpass.getuser()
    assert entry["message"] == f"user {name} disabled (their tokens and API keys stop working) by cli:{who}"
