"""The ``rustbill`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from .config import Settings, load_settings

if TYPE_CHECKING:  # (imported where used: a command loads only what it needs)
    from .auth import AuthService
    from .db import Database

T = TypeVar("T")

__all__ = ["app", "main"]

# The operator's log of changes made from the command line (users, tokens, keys, secrets, balances):
# one INFO line each on stderr, in the server's format, saying what changed and who (the OS user)
# — never a password, token or key.
log = logging.getLogger("rustbill.audit")  # the server's change log too

app = typer.Typer(
    help="RustBill IntegrationService",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no type column, no box drawing
)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
token_app = typer.Typer(help="Mint and revoke JWT access tokens.", no_args_is_help=True)
apikey_app = typer.Typer(help="Mint and revoke API keys.", no_args_is_help=True)
secrets_app = typer.Typer(help="The key that encrypts plugin secrets in the database.", no_args_is_help=True)
balance_app = typer.Typer(help="Customer balances: credit, debit, credit limit, statement.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(apikey_app, name="apikey")
app.add_typer(secrets_app, name="secrets")
plugin_app = typer.Typer(help="Write and check plugins (docs/plugins.md).", no_args_is_help=True)
app.add_typer(balance_app, name="balance")
app.add_typer(plugin_app, name="plugin")


class _State:
    config: Path | None = None


# RUSTBILL_* variables that are not settings but are read by the scripts and tests.
_OTHER_ENV = {"RUSTBILL_CONFIG", "RUSTBILL_VENV", "RUSTBILL_TEST_DATABASE_URL"}


def _config_errors(exc: ValidationError) -> str:
    """pydantic's errors as one line per key: ``server.listen: must be HOST:PORT, got 'x'``."""
    lines = []
    for e in exc.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (see config.example.toml)"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _settings() -> Settings:
    source = f"{_State.config}" if _State.config else "the environment"
    try:
        settings = load_settings(_State.config)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        typer.echo(f"error: invalid configuration (from {source} and RUSTBILL_* variables):", err=True)
        typer.echo(_config_errors(exc), err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # e.g. TOML syntax
        typer.echo(f"error: invalid configuration in {source}: {exc}", err=True)
        raise typer.Exit(2) from None
    _warn_unknown_env(settings)
    return settings


def _warn_unknown_env(settings: Settings) -> None:
    """A mistyped RUSTBILL_* variable would be ignored silently: say so."""
    sections = {name: set(type(getattr(settings, name)).model_fields) for name in type(settings).model_fields}
    for var in sorted(os.environ):
        if not var.startswith("RUSTBILL_") or var in _OTHER_ENV:
            continue
        section, sep, key = var[len("RUSTBILL_") :].lower().partition("__")
        if not sep or section not in sections or key.split("__", 1)[0] not in sections[section]:
            typer.echo(
                f"warning: {var} is not a setting and is ignored (settings are RUSTBILL_<SECTION>__<KEY>, "
                "e.g. RUSTBILL_DB__URL; see config.example.toml)",
                err=True,
            )


def _database_error(exc: BaseException, url: str) -> str | None:
    """A one-line explanation of a database failure at start, or None when it is not one."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from .db import redact_url

    where = f"database {redact_url(url)}"
    if isinstance(exc, ValueError) and "db.url" in str(exc):
        return f"{exc} (db.url / RUSTBILL_DB__URL)"
    inner: BaseException = exc
    while True:  # down to the driver's own exception: SQLAlchemy's .orig, else the __cause__
        orig = getattr(inner, "orig", None)
        deeper = orig if isinstance(orig, BaseException) else inner.__cause__
        if deeper is None:
            break
        inner = deeper
    name = type(inner).__name__
    if name == "InvalidCatalogNameError" or ("does not exist" in str(inner) and "database" in str(inner)):
        return f"{where} does not exist: create it (e.g. createdb) or fix db.url"
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return f"{where}: the server refused the credentials: {exc}"
    if isinstance(exc, (OSError, OperationalError, DBAPIError)) or name.endswith("ConnectionError"):
        text = str(inner).splitlines()[0] if str(inner) else name
        return f"{where} is unreachable: {text}"
    return None


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
        elif record.exc_text:  # (formatted already: a record from the server's log thread)
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


_TRACEBACKS = logging.Formatter()
# Log arguments that cannot change after the call: merged into the message by the log thread.
_UNCHANGING = frozenset({str, int, float, bool, type(None), uuid.UUID})


class _BackgroundLog(logging.handlers.QueueHandler):
    """The server's log lines are written by a thread of their own: formatting a line and writing
    it to a slow pipe (journald, a terminal) never holds up the event loop. Closing it (at
    ``logging.shutdown()``) writes what is queued; records after that are written at once."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        import queue

        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(q)
        self._handlers = handlers
        self._listener: logging.handlers.QueueListener | None = logging.handlers.QueueListener(
            q, *handlers, respect_handler_level=True
        )
        self._listener.start()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as it will be formatted in the thread: its message merged with its arguments
        now unless they cannot change (strings, numbers, ids: merged in the thread), its traceback
        as text. (Changed in place, not copied: this is the root logger's only handler, the last to
        see the record.)"""
        args = record.args
        if not isinstance(record.msg, str) or (
            args and not (isinstance(args, tuple) and all(type(a) in _UNCHANGING for a in args))
        ):
            record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None
        return record

    def emit(self, record: logging.LogRecord) -> None:
        if self._listener is not None:
            super().emit(record)
            return
        for h in self._handlers:
            if record.levelno >= h.level:
                h.handle(record)

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        super().close()


def _setup_logging(level: str, fmt: str = "text", *, background: bool = False) -> None:
    import time

    logging.Formatter.converter = time.gmtime  # UTC in every line
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if fmt == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonFormatter())
    if background:
        root = logging.getLogger()
        root.handlers[:] = [_BackgroundLog(root.handlers[:])]
        # What no line of ours shows is not gathered per record (the logging HOWTO, "Optimization"):
        # the caller's file and line, the thread and process names.
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
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


def _run(coro_fn: Callable[[Database, Settings], Awaitable[T]], *, create_db: bool = False) -> T:
    """Run a coroutine with a migrated database; domain errors print as one line, exit 1. An SQLite
    database that does not exist is not created (unless ``create_db``): a command run from another
    folder than the server's would otherwise work on an empty database of its own."""
    from .db import Database
    from .errors import RustBillError

    settings = _settings()
    url = settings.database_url
    if not create_db and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        typer.echo(
            f"error: no database at {url.removeprefix('sqlite:///')}: run rustbill from the server's folder, "
            "or say where the database is (--config FILE, or RUSTBILL_DB__URL)",
            err=True,
        )
        raise typer.Exit(1)
    _setup_logging("WARNING", settings.log.format)  # the server's format; only the CLI's own lines at INFO
    log.setLevel(settings.log.level)

    async def go() -> T:
        db = Database.from_settings(settings)
        try:
            await db.migrate()
            return await coro_fn(db, settings)
        finally:
            await db.dispose()

    try:
        with _database_errors_as_one_line(settings):
            return asyncio.run(go())
    except RustBillError as exc:
        typer.echo(f"error: {exc.message} (database {_shown_db(settings)})", err=True)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _database_errors_as_one_line(settings: Settings) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        message = _database_error(exc, settings.database_url)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None


def _shown_db(settings: Settings) -> str:
    from .db import redact_url

    return redact_url(settings.database_url)


def _changed(message: str, *args: Any) -> None:
    """Log one change made from the command line, naming who made it (see ``log``)."""
    log.info(message + " by %s", *args, _admin_name())


def _auth(db: Database, settings: Settings) -> AuthService:
    from .auth import AuthService

    return AuthService(db, settings)


@app.command()
def serve() -> None:
    """Run the gRPC server (migrates the database and scans the plugins folder first)."""
    from .plugins.host import start_zygote_here

    settings = _settings()
    # Before the server's own modules (the zygote and its workers do not need them) and before the
    # log thread (the zygote is forked from a process of one thread).
    start_zygote_here()
    from .server import serve as run_server

    _setup_logging(settings.log.level, settings.log.format, background=True)
    with _database_errors_as_one_line(settings):
        run_server(settings)


@app.command()
def migrate() -> None:
    """Apply database migrations and exit."""

    async def go(db: Any, settings: Settings) -> None:
        typer.echo(f"database {_shown_db(settings)} is up to date")

    _run(go, create_db=True)


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="user name")],
    role: Annotated[str, typer.Option("--role", help="admin or customer")] = "customer",
    password: Annotated[str | None, typer.Option("--password", help="optional login password")] = None,
) -> None:
    """Create a user."""

    async def go(db: Any, settings: Settings) -> None:
        user = await _auth(db, settings).create_user(name, role, password=password)
        typer.echo(f"created {user.role} user {user.username} ({user.id})")
        password_set = "with" if password else "without"
        _changed("user %s created (role %s, id %s, %s a password)", user.username, user.role, user.id, password_set)

    _run(go)


@user_app.command("list")
def user_list() -> None:
    """List users: name, role, active, password set, created."""
    from sqlalchemy import select

    from .db import User

    async def go(db: Any, settings: Settings) -> list[Any]:
        async with db.read() as s:
            return list((await s.execute(select(User).order_by(User.username))).scalars())

    rows = _run(go)
    typer.echo(f"{'NAME':24} {'ROLE':9} {'ACTIVE':7} {'PASSWORD':9} CREATED")
    for u in rows:
        active, password = "yes" if u.is_active else "no", "set" if u.password_hash else "-"
        typer.echo(f"{u.username:24} {u.role:9} {active:7} {password:9} {u.created_at:%Y-%m-%d %H:%M}")


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument(metavar="NAME", help="user name")]) -> None:
    """Disable a user: all their tokens and API keys stop working."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).set_user_active(name, False)
        typer.echo(f"disabled user {name}")
        _changed("user %s disabled (their tokens and API keys stop working)", name)

    _run(go)


@user_app.command("enable")
def user_enable(name: Annotated[str, typer.Argument(metavar="NAME", help="user name")]) -> None:
    """Enable a disabled user again."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).set_user_active(name, True)
        typer.echo(f"enabled user {name}")
        _changed("user %s enabled", name)

    _run(go)


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="user name")],
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
        _changed("password of user %s changed (their open logins ended)", name)

    _run(go)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="user name")],
    ttl: Annotated[int | None, typer.Option("--ttl", help="lifetime in seconds (default jwt.ttl_seconds)")] = None,
) -> None:
    """Print a new access token for USER (only the token, for scripts)."""

    async def go(db: Any, settings: Settings) -> str:
        token = await _auth(db, settings).create_token(user, ttl)
        _changed("access token issued to user %s (valid %d s)", user, ttl or settings.jwt.ttl_seconds)
        return token

    typer.echo(_run(go))


@token_app.command("revoke")
def token_revoke(user: Annotated[str, typer.Option("--user", help="user name")]) -> None:
    """Revoke every token issued to USER so far."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).revoke_tokens(user)
        typer.echo(f"revoked all tokens of {user} (servers stop accepting them within auth.cache_seconds)")
        _changed("every token of user %s revoked", user)

    _run(go)


@apikey_app.command("create")
def apikey_create(
    user: Annotated[str, typer.Option("--user", help="user name")],
    name: Annotated[str, typer.Option("--name", help="a note on what the key is for")] = "",
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", help="the key stops working after this many days", min=0.001)
    ] = None,
) -> None:
    """Print a new API key for USER (only the key; it is stored hashed and cannot be shown again)."""
    from datetime import timedelta

    from .ids import utcnow

    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days is not None else None

    async def go(db: Any, settings: Settings) -> str:
        auth = _auth(db, settings)
        key, row = await auth.issue_api_key((await auth.get_user(user)).id, name, expires_at=expires)
        until = f", expires {expires.isoformat()}" if expires is not None else ""
        _changed("API key %s created for user %s (name %r%s)", row.key_prefix, user, name, until)
        return key

    typer.echo(_run(go))


@apikey_app.command("list")
def apikey_list(
    user: Annotated[str | None, typer.Option("--user", help="only this user's keys")] = None,
) -> None:
    """List API keys (prefix, user, created, revoked, expires, last used, name); the keys
    themselves are not stored."""
    from sqlalchemy import select

    from .db import ApiKey, User

    async def go(db: Any, settings: Settings) -> list[Any]:
        q = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id).order_by(ApiKey.created_at)
        if user:
            q = q.where(User.username == user)
        async with db.read() as s:
            return list((await s.execute(q)).all())

    rows = _run(go)

    def when(t: Any) -> str:
        return t.strftime("%Y-%m-%d %H:%M") if t else "-"

    typer.echo(f"{'PREFIX':10} {'USER':20} {'CREATED':17} {'REVOKED':17} {'EXPIRES':17} {'LAST USED':17} NAME")
    for key, username in rows:
        typer.echo(
            f"{key.key_prefix:10} {username:20} {when(key.created_at):17} {when(key.revoked_at):17} "
            f"{when(key.expires_at):17} {when(key.last_used_at):17} {key.name}"
        )


@apikey_app.command("revoke")
def apikey_revoke(prefix: Annotated[str, typer.Argument(metavar="PREFIX", help="the key's prefix")]) -> None:
    """Revoke the API key with PREFIX (the 8 characters after rbk_; see apikey list)."""

    async def go(db: Any, settings: Settings) -> None:
        await _auth(db, settings).revoke_api_key(prefix)
        typer.echo(f"revoked API key {prefix}")
        _changed("API key %s revoked", prefix)

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
    _changed("secrets rotated (the secrets of %d interface(s) re-encrypted with the current key)", n)


def _ledger(db: Any, settings: Settings) -> Any:
    from .domain.ledger import Ledger

    return Ledger(db, currency=settings.billing.currency)


def _admin_name() -> str:
    """Who made a ledger entry from the command line: the operating-system user."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:128]
    except Exception:
        return "cli"


def _amount(text: str) -> Any:
    from .domain.ledger import parse_amount
    from .errors import InvalidArgument

    try:
        return parse_amount(text.strip(), "AMOUNT")
    except InvalidArgument as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


_NOTE = typer.Option("--note", help="why (kept in the ledger entry), e.g. the bank transfer's reference")
_CUSTOMER = typer.Argument(metavar="NAME", help="customer user name")


def _post(name: str, amount: str, note: str, debit: bool) -> None:
    """One ledger entry for customer ``name`` (credit or debit), then the new balance: credit and
    debit differ only in the ledger call and the words."""
    value = _amount(amount)

    async def go(db: Any, settings: Settings) -> Any:
        ledger = _ledger(db, settings)
        user = await ledger.customer(name)
        post = ledger.debit if debit else ledger.credit
        return await post(user.id, value, note=note, by=_admin_name())

    entry = _run(go)
    verb, moved = ("debited", -entry.amount) if debit else ("credited", entry.amount)
    typer.echo(f"{verb} {name} {_money(moved)}; balance {_money(entry.balance_after)} (entry {entry.id})")
    _changed("balance of %s %s %s (now %s, entry %s)", name, verb, _money(moved), _money(entry.balance_after),
             entry.id)  # fmt: skip


_CREDIT = typer.Argument(metavar="AMOUNT", help="decimal amount to add, e.g. 100.00")
_DEBIT = typer.Argument(metavar="AMOUNT", help="decimal amount to take, e.g. 5.00")


@balance_app.command("credit")
def balance_credit(
    name: Annotated[str, _CUSTOMER], amount: Annotated[str, _CREDIT], note: Annotated[str, _NOTE] = ""
) -> None:
    """Add AMOUNT to customer NAME's balance (one ledger entry); prints the new balance."""
    _post(name, amount, note, debit=False)


@balance_app.command("debit")
def balance_debit(
    name: Annotated[str, _CUSTOMER], amount: Annotated[str, _DEBIT], note: Annotated[str, _NOTE] = ""
) -> None:
    """Take AMOUNT from customer NAME's balance (a correction; not below the credit limit)."""
    _post(name, amount, note, debit=True)


@balance_app.command("limit")
def balance_limit(
    name: Annotated[str, _CUSTOMER],
    amount: Annotated[str, typer.Argument(metavar="AMOUNT", help="how far below zero orders may go, e.g. 50")],
) -> None:
    """Set customer NAME's credit limit (0: orders need the money on the balance)."""
    value = _amount(amount)

    async def go(db: Any, settings: Settings) -> None:
        ledger = _ledger(db, settings)
        await ledger.set_credit_limit((await ledger.customer(name)).id, value)

    _run(go)
    typer.echo(f"credit limit of {name} set to {_money(value)}")
    _changed("credit limit of %s set to %s", name, _money(value))


@balance_app.command("show")
def balance_show(
    name: Annotated[str, _CUSTOMER],
    last: Annotated[int, typer.Option("--last", help="how many ledger entries to show")] = 20,
) -> None:
    """Customer NAME's balance and latest ledger entries."""
    from .domain.paging import Page

    async def go(db: Any, settings: Settings) -> Any:
        ledger = _ledger(db, settings)
        user = await ledger.customer(name)
        return await ledger.balance(user.id), (await ledger.transactions(user.id, Page.of(1, last)))[0]

    view, entries = _run(go)
    limit = f" (credit limit {_money(view.credit_limit)})" if view.credit_limit else ""
    typer.echo(f"{name}: {_money(view.balance)} {view.currency}{limit}")
    typer.echo(f"{'WHEN':17} {'KIND':7} {'AMOUNT':>14} {'BALANCE':>14} {'BY':16} NOTE")
    for e in entries:
        typer.echo(
            f"{e.created_at:%Y-%m-%d %H:%M} {e.kind:7} {_money(e.amount):>14} {_money(e.balance_after):>14} "
            f"{e.created_by[:16]:16} {e.note}"
        )


_PLUGIN_TYPES = "first_party_provider, upstream_provider, gateway or notifier"


@plugin_app.command("new")
def plugin_new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the plugin id: lower-case letters, digits, _")],
    plugin_type: Annotated[str, typer.Option("--type", help=_PLUGIN_TYPES)],
    folder: Annotated[Path, typer.Option("--dir", help="where to write NAME.py")] = Path("."),
) -> None:
    """Write NAME.py: a working plugin of that type with every contract function, to start from."""
    from .plugins.scaffold import ScaffoldError, new_plugin

    try:
        path = new_plugin(plugin_type, name, folder)
    except ScaffoldError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")
    typer.echo(f"next: rustbill plugin check {path}, then copy it into the server's plugins folder")


@plugin_app.command("check")
def plugin_check(
    path: Annotated[Path, typer.Argument(metavar="FILE_OR_DIR", help="a plugin file, or a plugins folder")],
    config: Annotated[
        str | None,
        typer.Option("--config", help="the interface config: JSON, or a JSON file (default: made from the schema)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON (for CI)")] = False,
) -> None:
    """Load each plugin as the server does, call every contract function with sample arguments and
    check each result; exit 1 on any violation (an unreachable remote system is not one)."""
    import json

    from .plugins.check import check_path, render

    if not path.exists():
        typer.echo(f"error: {path} does not exist", err=True)
        raise typer.Exit(2)
    cfg = None
    if config is not None:
        try:
            text = config if config.lstrip().startswith("{") else Path(config).read_text()
            cfg = json.loads(text)
        except (OSError, ValueError) as exc:
            typer.echo(f"error: --config is neither a JSON object nor a readable JSON file: {exc}", err=True)
            raise typer.Exit(2) from None
        if not isinstance(cfg, dict):
            typer.echo("error: --config must be a JSON object", err=True)
            raise typer.Exit(2)
    plugins = _settings().plugins  # the server's timeouts
    logging.getLogger("rustbill").setLevel(logging.CRITICAL)  # the report says it all
    checks = asyncio.run(
        check_path(path, config=cfg, call_timeout=plugins.call_timeout_seconds, timeouts=plugins.timeouts)
    )
    if not checks:
        typer.echo(f"error: no plugin files in {path}", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps({"ok": all(c.ok for c in checks), "plugins": [c.as_dict() for c in checks]}, indent=2))
    else:
        typer.echo(render(checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def _money(d: Any) -> str:
    from .money import money_text

    return money_text(d)


def _config_first(argv: list[str]) -> list[str]:
    """``--config FILE`` / ``-c FILE`` / ``--config=FILE`` anywhere on the line, moved before the
    command (``rustbill user list --config x.toml`` works like ``rustbill --config x.toml user list``),
    except after ``plugin check``, whose ``--config`` is a plugin's."""
    out: list[str] = []
    front: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i : i + 2] == ["plugin", "check"]:  # from here on, --config is the interface's config
            out += argv[i:]
            break
        a = argv[i]
        if a in ("--config", "-c") and i + 1 < len(argv):
            front += [a, argv[i + 1]]
            i += 2
            continue
        if a.startswith("--config="):
            front.append(a)
        else:
            out.append(a)
        i += 1
    return front + out


def main() -> None:
    import gc
    import sys

    try:
        app(args=_config_first(sys.argv[1:]), prog_name="rustbill")
    finally:
        # The process ends here: its objects are freed with it. Without this, the interpreter's
        # final garbage collection walks every object of the imported modules first (about half a
        # second for the server); the atexit handlers (e.g. logging's flush) still run.
        gc.freeze()
