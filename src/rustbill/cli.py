"""The ``rustbill`` command line."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from .config import Settings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="RustBill IntegrationService", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
token_app = typer.Typer(help="Mint and revoke JWT access tokens.", no_args_is_help=True)
apikey_app = typer.Typer(help="Mint and revoke API keys.", no_args_is_help=True)
secrets_app = typer.Typer(help="The key that encrypts plugin secrets in the database.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(apikey_app, name="apikey")
app.add_typer(secrets_app, name="secrets")


class _State:
    config: Path | None = None


def _settings() -> Settings:
    try:
        return load_settings(_State.config)
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        typer.echo(f"error: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _setup_logging(level: str, fmt: str = "text") -> None:
    import time

    logging.Formatter.converter = time.gmtime  # UTC in every line
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if fmt == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonFormatter())
    # Python warnings (e.g. from a plugin) go to the log, not to stderr in another format.
    logging.captureWarnings(True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO, and some protocols carry keys in query strings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


@app.callback()
def _main(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file (default: $RUSTBILL_CONFIG).", show_default=False),
    ] = None,
) -> None:
    env = os.environ.get("RUSTBILL_CONFIG")
    _State.config = config or (Path(env) if env else None)


def _run(coro_fn: Any) -> Any:
    """Run a coroutine with a migrated database; domain errors print as one line, exit 1."""
    from .db import Database
    from .errors import RustBillError

    settings = _settings()
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")

    async def go() -> Any:
        db = Database.from_settings(settings)
        try:
            await db.migrate()
            return await coro_fn(db, settings)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except RustBillError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: database unreachable: {exc}", err=True)
        raise typer.Exit(1) from None


def _auth(db: Any, settings: Settings) -> Any:
    from .auth import AuthService

    return AuthService(db, settings)


@app.command()
def serve() -> None:
    """Run the gRPC server (migrates the database and scans the plugins folder first)."""
    from .server import serve as run_server

    settings = _settings()
    _setup_logging(settings.log.level, settings.log.format)
    run_server(settings)


@app.command()
def migrate() -> None:
    """Apply database migrations and exit."""

    async def go(db: Any, settings: Settings) -> None:
        typer.echo("database is up to date")

    _run(go)


@user_app.command("create")
def user_create(
    name: str,
    role: Annotated[str, typer.Option("--role", help="admin or customer")] = "customer",
    password: Annotated[str | None, typer.Option("--password", help="optional login password")] = None,
) -> None:
    """Create a user."""

    async def go(db: Any, settings: Settings) -> None:
        user = await _auth(db, settings).create_user(name, role, password=password)
        typer.echo(f"created {user.role} user {user.username} ({user.id})")

    _run(go)


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user: all their tokens and API keys stop working."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).set_user_active(name, False)
        typer.echo(f"disabled user {name}")

    _run(go)


@user_app.command("enable")
def user_enable(name: str) -> None:
    """Enable a disabled user again."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).set_user_active(name, True)
        typer.echo(f"enabled user {name}")

    _run(go)


@user_app.command("passwd")
def user_passwd(
    name: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the new password from standard input (for scripts)")
    ] = False,
) -> None:
    """Set NAME's sign-in password (asked twice; at least 8 characters). Ends NAME's open logins."""
    import sys

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).set_password(name, password)
        typer.echo(f"password of {name} set")

    _run(go)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="user name")],
    ttl: Annotated[int | None, typer.Option("--ttl", help="lifetime in seconds (default jwt.ttl_seconds)")] = None,
) -> None:
    """Print a new access token for USER (only the token, for scripts)."""

    async def go(db: Any, settings: Settings) -> str:
        return await _auth(db, settings).create_token(user, ttl)  # type: ignore[no-any-return]

    typer.echo(_run(go))


@token_app.command("revoke")
def token_revoke(user: Annotated[str, typer.Option("--user", help="user name")]) -> None:
    """Revoke every token issued to USER so far."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).revoke_tokens(user)
        typer.echo(f"revoked all tokens of {user} (servers stop accepting them within auth.cache_seconds)")

    _run(go)


@apikey_app.command("create")
def apikey_create(
    user: Annotated[str, typer.Option("--user", help="user name")],
    name: Annotated[str, typer.Option("--name", help="a note on what the key is for")] = "",
) -> None:
    """Print a new API key for USER (only the key; it is stored hashed and cannot be shown again)."""

    async def go(db: Any, settings: Settings) -> str:
        return await _auth(db, settings).create_api_key(user, name)  # type: ignore[no-any-return]

    typer.echo(_run(go))


@apikey_app.command("revoke")
def apikey_revoke(prefix: str) -> None:
    """Revoke the API key with PREFIX (the 8 characters after ``rbk_``)."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).revoke_api_key(prefix)
        typer.echo(f"revoked API key {prefix}")

    _run(go)


@secrets_app.command("new-key")
def secrets_new_key() -> None:
    """Print a new secrets key (for [secrets] key / RUSTBILL_SECRETS__KEY)."""
    from .vault import Vault

    typer.echo(Vault.new_key())


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored plugin secret with the current key.

    To change the key: put a new one (`rustbill secrets new-key`) in [secrets] key and the old one in
    [secrets] previous_keys on every process, restart them, run this, then drop previous_keys.
    """

    async def go(db: Any, settings: Settings) -> int:
        from .domain import Catalog
        from .plugins import PluginRegistry, PluginRuntime
        from .vault import Vault

        vault = Vault.from_settings(settings.secrets.key, settings.secrets.previous_keys, settings.data.dir)
        registry = PluginRegistry()
        return await Catalog(db, registry, PluginRuntime(db, registry, vault=vault), vault).rotate_secrets()

    n = _run(go)
    typer.echo(f"re-encrypted the secrets of {n} interface(s) with the current key")


def main() -> None:
    app(prog_name="rustbill")
