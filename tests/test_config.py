"""Configuration: defaults, TOML file, environment overrides, database URLs, bad values."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT

from rustbill.config import Settings, async_db_url, load_settings


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RUSTBILL_"):
            monkeypatch.delenv(key)


def test_defaults_need_no_file() -> None:
    s = load_settings(None)
    assert s.server.listen == "127.0.0.1:50051"
    assert s.plugins.dir == Path("./plugins")
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("data/rustbill.db")


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[server]\nlisten = "0.0.0.0:6000"\n[db]\nurl = "postgresql://u:p@db:5432/rb"\n'
        '[plugins]\ndir = "/srv/plugins"\ntimeouts = { create_instance = 300 }\n'
    )
    s = load_settings(f)
    assert s.server.listen == "0.0.0.0:6000" and s.plugins.dir == Path("/srv/plugins")
    assert s.plugins.timeouts == {"create_instance": 300} and s.plugins.call_timeout_seconds == 30
    monkeypatch.setenv("RUSTBILL_SERVER__LISTEN", "127.0.0.1:7000")
    monkeypatch.setenv("RUSTBILL_DB__URL", "sqlite:///x.db")
    s = load_settings(f)
    assert s.server.listen == "127.0.0.1:7000" and s.db.url == "sqlite:///x.db"
    assert s.plugins.dir == Path("/srv/plugins")


def test_example_config_documents_every_key() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    defaults = Settings().model_dump()
    for section, values in defaults.items():
        assert section in example, f"[{section}] missing from config.example.toml"
        for key in values:
            if key == "max_concurrent_rpcs":
                assert "max_concurrent_rpcs" in (ROOT / "config.example.toml").read_text()
                continue
            assert key in example[section], f"{section}.{key} missing from config.example.toml"
    # and the example itself loads
    assert load_settings(ROOT / "config.example.toml").server.listen == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("plain", "driver"),
    [
        ("sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_database_urls_get_the_async_driver(plain: str, driver: str) -> None:
    assert async_db_url(plain) == driver


def test_unsupported_database_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        async_db_url("mysql://u@h/db")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[server]\nlisten = "nonsense"\n', "server.listen must be HOST:PORT"),
        ('[server]\nlistn = "x"\n', "listn"),
        ('[jwt]\nsecret = "short"\n', "at least 32 characters"),
        ("[plugins]\ncall_timeout_seconds = -1\n", "call_timeout_seconds"),
    ],
)
def test_bad_configuration_is_a_clear_error_not_a_traceback(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    res = subprocess.run(
        [sys.executable, "-m", "rustbill", "--config", str(f), "serve"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "rustbill", "--config", str(tmp_path / "nope.toml"), "migrate"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2 and "configuration file not found" in res.stderr


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "RUSTBILL_DB__URL": f"sqlite:///{tmp_path / 'm.db'}"}
    res = subprocess.run([sys.executable, "-m", "rustbill", "migrate"], capture_output=True, text=True, env=env,
                         timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "m.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"plugins", "plugin_interfaces", "products", "instances", "users", "api_keys"} <= tables


def test_cli_errors_are_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Mistakes a new user makes: each is a short message naming what to fix, never a traceback."""
    import os

    from helpers import run_cli

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``rustbill ARGS`` in a fresh folder, without any RUSTBILL_* setting (a process of its own,
        see helpers.run_cli; the tests above start a new interpreter)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RUSTBILL_")}
        return run_cli(list(args), cwd=tmp_path, env={**clean, **env})

    cases = [
        (("user", "list"), {}, "no database at " + str(tmp_path / "data" / "rustbill.db")),
        (("user", "list"), {"RUSTBILL_DB__URL": "mysql://x/y"}, "db.url: unsupported database 'mysql'"),
        (("user", "list"), {"RUSTBILL_DB__URL": "postgresql://postgres@127.0.0.1:1/x"}, "is unreachable"),
        (("user", "list"), {"RUSTBILL_SERVER__LISTEN": "nope"}, "server.listen: server.listen must be HOST:PORT"),
        (("user", "list", "--config", "missing.toml"), {}, "configuration file not found: missing.toml"),
    ]
    for args, env, expected in cases:
        res = run(*args, **env)
        assert res.returncode in (1, 2), (args, env, res.stderr)
        assert expected in res.stderr, (args, env, res.stderr)
        assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) <= 3, res.stderr
    typo = run("migrate", RUSTBILL_DATABASE_URL="x")
    assert typo.returncode == 0 and "RUSTBILL_DATABASE_URL is not a setting and is ignored" in typo.stderr
    # --config after the command, and the list commands
    (tmp_path / "c.toml").write_text(f'[db]\nurl = "sqlite:///{tmp_path}/c.db"\n')
    assert run("migrate", "--config", "c.toml").returncode == 0
    assert run("user", "create", "ann", "--config", "c.toml").returncode == 0
    listed = run("user", "list", "-c", "c.toml")
    assert listed.returncode == 0 and "ann" in listed.stdout and "customer" in listed.stdout
    assert run("apikey", "create", "--user", "ann", "--config=c.toml").returncode == 0
    keys = run("apikey", "list", "--config", "c.toml")
    assert keys.returncode == 0 and "ann" in keys.stdout
