"""Plugin definitions and interfaces: the admin's catalog of what is installed and configured."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from jsonschema.exceptions import ValidationError
from jsonschema.validators import validator_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..db import Database, Instance, Plugin, PluginInterface
from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PluginNotLoaded
from ..ids import utcnow
from ..inputs import loads_strict, shown
from ..plugins import PluginRegistry, PluginRuntime
from ..plugins.contract import PLUGIN_TYPES, PROVIDER_TYPES, metadata_error
from ..vault import Vault, is_secret, merge_update, refuse_placeholder, secret_paths
from .templates import empty_template, spec_template

__all__ = ["Catalog", "PluginInfo", "ProviderEntry", "validate_config"]

log = logging.getLogger(__name__)

MAX_NAME = 200
MAX_CONFIG_BYTES = 256 * 1024
# A listing that contains a provider whose spec_template failed is recomputed after this long.
_DEGRADED_LISTING_TTL = 30.0


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    interface_id: uuid.UUID
    name: str
    provider_type: str  # "first_party" / "upstream"
    is_healthy: bool
    spec_template: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChannelEntry:
    interface_id: uuid.UUID
    name: str
    is_healthy: bool


def check_plugin_type(plugin_type: str | None) -> str | None:
    if plugin_type is None or plugin_type == "":
        return None
    if plugin_type not in PLUGIN_TYPES:
        raise InvalidArgument(f"plugin_type must be one of {', '.join(PLUGIN_TYPES)}; got {shown(plugin_type)}")
    return plugin_type


def validate_config(config_json: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Parse and validate an interface's config; errors name the offending field."""
    return check_config(parse_config(config_json), schema)


def parse_config(config_json: str) -> dict[str, Any]:
    """An interface's config_json as a dict (INVALID_ARGUMENT when it is not a JSON object)."""
    if len(config_json.encode()) > MAX_CONFIG_BYTES:
        raise InvalidArgument(f"config_json is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    text = config_json.strip() or "{}"
    config = loads_strict(text, "config_json")
    if not isinstance(config, dict):
        raise InvalidArgument(f"config_json must be a JSON object, not {type(config).__name__}")
    return config


def check_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``config`` when it satisfies ``schema``; else INVALID_ARGUMENT naming the field."""
    validator = validator_for(schema)(schema)
    error = _first_error(validator, config)
    if error is not None:
        where = "config_json" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        message = error.message
        if error.validator == "required" and isinstance(error.validator_value, list):
            missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
            if missing:
                where = f"{where}.{missing[0]}"
                message = "is required"
        if _secret_at(schema, error):
            message = f"fails {error.validator!r} ({error.validator_value!r})"
        raise InvalidArgument(f"{where}: {message}")
    return config


def _first_error(validator: Any, config: dict[str, Any]) -> ValidationError | None:
    from jsonschema.exceptions import best_match

    error: ValidationError | None = best_match(validator.iter_errors(config))  # (its stub has no return type)
    return error


def _secret_at(schema: dict[str, Any], error: ValidationError) -> bool:
    """Whether the failing value sits in a secret field (then its value must not be echoed)."""
    node: Any = schema
    for part in error.absolute_path:
        if not isinstance(node, dict):
            return False
        node = (node.get("properties") or {}).get(part, {}) if isinstance(part, str) else node.get("items", {})
    return is_secret(node)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A plugin definition row with what this process knows of its file."""

    row: Plugin
    config_schema: dict[str, Any] | None  # None: not loaded here
    title: str
    description: str
    load_error: str


def _doc_title(doc: str | None) -> tuple[str, str]:
    """(first line, rest of the first paragraph) of a plugin module's docstring."""
    paragraph = (doc or "").strip().split("\n\n", 1)[0].replace("``", "")  # (reST literals read as plain text)
    first, _, rest = paragraph.partition("\n")
    return first.strip()[:200], " ".join(rest.split())[:2000]


class _Cache:
    """The listings and rows the catalog keeps, dropped on every change. A value read from the
    database while a change dropped entries is not kept: it may be from before that change (a read
    that started before a health check's write and ended after it would otherwise stay cached)."""

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[float, Any]] = {}
        self.generation = 0  # how many drops so far: taken before a read, checked by put()

    def get(self, key: Any) -> Any | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: Any, value: Any, generation: int, ttl: float = float("inf")) -> None:
        if generation == self.generation:
            self._entries[key] = (time.monotonic() + ttl, value)

    def drop(self, *keys: Any) -> None:
        """Drop ``keys`` (none given: everything)."""
        self.generation += 1
        if not keys:
            self._entries.clear()
        for key in keys:
            self._entries.pop(key, None)


class Catalog:
    """Plugin definitions, interfaces and the enabled-by-type listings."""

    def __init__(self, db: Database, registry: PluginRegistry, runtime: PluginRuntime, vault: Vault) -> None:
        self._db = db
        self._vault = vault
        self._registry = registry
        self._runtime = runtime
        # Listings by kind, and single interface rows by ("row", id): dropped together on any change.
        self._listings = _Cache()
        self._publish: Callable[[uuid.UUID], None] = lambda _id: None
        # plugin_id -> why its loaded version cannot be enabled, as last logged
        self._unusable: dict[str, str] = {}
        runtime.on_evict(lambda _id: self._listings.drop())
        registry.subscribe(lambda _pid: self._listings.drop())
        registry.subscribe(self._plugin_loaded)

    def _plugin_loaded(self, plugin_id: str) -> None:
        """Log, once per message, a loaded plugin that cannot be enabled."""
        why = self.metadata_error(plugin_id)
        if why and self._unusable.get(plugin_id) != why:
            log.error("plugin %s loaded, but no interface of it can be enabled: %s", plugin_id, why)
        if why:
            self._unusable[plugin_id] = why
        else:
            self._unusable.pop(plugin_id, None)

    def metadata_error(self, plugin_id: str) -> str:
        """Why the loaded version of ``plugin_id`` cannot be enabled (its metadata is unusable), or ""."""
        loaded = self._registry.get(plugin_id)
        return "" if loaded is None else metadata_error(f"{plugin_id}.py", loaded.config_schema)

    def _refuse_unusable(self, plugin_id: str) -> None:
        why = self.metadata_error(plugin_id)
        if why:
            raise FailedPrecondition(f"plugin {plugin_id!r} cannot be enabled: {why}")

    def set_publisher(self, publish: Callable[[uuid.UUID], None]) -> None:
        """Tell other processes that an interface changed (PostgreSQL NOTIFY)."""
        self._publish = publish

    def health_changed(self, interface_id: uuid.UUID) -> None:
        self._listings.drop()
        self._publish(interface_id)

    def rows_checked(self, interface_ids: list[uuid.UUID]) -> None:
        """Health checks wrote these rows (``last_check_at`` at least): drop their cached copies."""
        self._listings.drop(*(("row", iid) for iid in interface_ids))

    def interface_changed(self, interface_id: uuid.UUID) -> None:
        self._runtime.evict(interface_id)
        self._listings.drop()
        self._publish(interface_id)

    # ---- plugin definitions ----

    async def list_plugins(self, plugin_type: str | None) -> list[PluginInfo]:
        plugin_type = check_plugin_type(plugin_type)
        q = select(Plugin).order_by(Plugin.plugin_id)
        if plugin_type:
            q = q.where(Plugin.plugin_type == plugin_type)
        async with self._db.read() as s:
            return [self._info(row) for row in (await s.execute(q)).scalars()]

    async def get_plugin(self, plugin_def_id: uuid.UUID) -> PluginInfo:
        async with self._db.read() as s:
            row = await s.get(Plugin, plugin_def_id)
        if row is None:
            raise NotFound(f"plugin definition {plugin_def_id} not found")
        return self._info(row)

    def _info(self, row: Plugin) -> PluginInfo:
        loaded = self._registry.get(row.plugin_id)
        title, description = _doc_title(loaded.doc if loaded is not None else None)
        return PluginInfo(
            row=row,
            config_schema=loaded.config_schema if loaded is not None else None,
            title=title,
            description=description,
            load_error=self._registry.load_errors.get(row.plugin_id) or self.metadata_error(row.plugin_id),
        )

    # ---- interfaces ----

    async def list_interfaces(self, plugin_type: str | None) -> list[PluginInterface]:
        plugin_type = check_plugin_type(plugin_type)
        q = select(PluginInterface).order_by(PluginInterface.created_at, PluginInterface.id)
        if plugin_type:
            q = q.where(PluginInterface.plugin_type == plugin_type)
        async with self._db.read() as s:
            return list((await s.execute(q)).scalars())

    async def get_interface(self, interface_id: uuid.UUID) -> PluginInterface:
        """One interface row, cached like the listings: dropped on every change of any interface,
        here or in another process (LISTEN/NOTIFY), and on every plugin reload."""
        hit = self._listings.get(("row", interface_id))
        if hit is not None:
            return cast(PluginInterface, hit)  # (the listing cache holds each kind under its own key)
        generation = self._listings.generation
        async with self._db.read() as s:
            row = await s.get(PluginInterface, interface_id)
        if row is None:
            raise NotFound(f"interface {interface_id} not found")
        self._listings.put(("row", interface_id), row, generation)
        return row

    async def create_interface(self, plugin_def_id: uuid.UUID, display_name: str, config_json: str) -> PluginInterface:
        name = _check_name(display_name)
        plugin_row = (await self.get_plugin(plugin_def_id)).row
        loaded = self._registry.get(plugin_row.plugin_id)
        if loaded is None or not plugin_row.file_present:
            raise PluginNotLoaded(
                plugin_row.plugin_id,
                f"plugin {plugin_row.plugin_id!r} is not loaded (its file is missing or broken); "
                "fix the file in the plugins folder first",
            )
        self._refuse_unusable(plugin_row.plugin_id)
        config = validate_config(config_json, loaded.config_schema)
        paths = secret_paths(loaded.config_schema)
        refuse_placeholder(config, paths)
        config = self._vault.seal(config, paths)
        now = utcnow()
        row = PluginInterface(
            plugin_def_id=plugin_row.id,
            plugin_type=plugin_row.plugin_type,
            plugin_id=plugin_row.plugin_id,
            display_name=name,
            enabled=True,
            config_json=json.dumps(config, ensure_ascii=False),
            config_schema=json.dumps(loaded.config_schema, ensure_ascii=False),
            is_healthy=False,
            has_admin_page=loaded.has_admin_page,
            plugin_version=loaded.version,
            created_at=now,
            updated_at=now,
        )
        try:
            await self._db.add(row)
        except IntegrityError:
            # The plugin row may also have vanished in between; tell which.
            async with self._db.read() as s:
                if await s.get(Plugin, plugin_def_id) is None:
                    raise NotFound(f"plugin definition {plugin_def_id} not found") from None
            raise AlreadyExists(
                f"an interface named {name!r} already exists for plugin {plugin_row.plugin_id!r}"
            ) from None
        self._listings.drop()
        self._publish(row.id)
        return row

    async def update_interface(
        self, interface_id: uuid.UUID, *, config_json: str | None, display_name: str | None
    ) -> PluginInterface:
        name = _check_name(display_name) if display_name is not None else None
        try:
            async with self._db.write() as s:
                row = await s.get(PluginInterface, interface_id)
                if row is None:
                    raise NotFound(f"interface {interface_id} not found")
                changed = False
                if config_json is not None:
                    schema = json.loads(row.config_schema or "{}")
                    paths = secret_paths(schema)
                    stored = self._vault.open(
                        json.loads(row.config_json or "{}"), paths, what=f"interface {row.display_name!r}"
                    )
                    # Secrets left out or sent as the placeholder keep their stored value.
                    config = check_config(merge_update(parse_config(config_json), stored, paths), schema)
                    row.config_json = json.dumps(self._vault.seal(config, paths), ensure_ascii=False)
                    changed = True
                if name is not None and name != row.display_name:
                    row.display_name = name
                    changed = True
                if changed:
                    row.updated_at = utcnow()
                    await s.flush()
        except IntegrityError:
            raise AlreadyExists(f"an interface named {name!r} already exists for this plugin") from None
        if changed:
            self.interface_changed(interface_id)
        return row

    async def seal_stored_secrets(self) -> int:
        """Encrypt the secrets still stored in clear (rows written before encryption at rest, or by
        an older version); returns how many interfaces were rewritten. Safe to run at every start."""
        done = 0
        async with self._db.write() as s:
            for row in (await s.execute(select(PluginInterface))).scalars():
                paths = secret_paths(json.loads(row.config_schema or "{}"))
                config = json.loads(row.config_json or "{}")
                if paths and self._vault.has_plain(config, paths):
                    row.config_json = json.dumps(self._vault.seal(config, paths), ensure_ascii=False)
                    done += 1
        if done:
            log.info("encrypted the stored secrets of %d interface(s)", done)
        return done

    async def rotate_secrets(self) -> int:
        """Re-encrypt every stored secret with the current key; returns the interfaces rewritten."""
        done = 0
        async with self._db.write() as s:
            for row in (await s.execute(select(PluginInterface))).scalars():
                paths = secret_paths(json.loads(row.config_schema or "{}"))
                config, changed = self._vault.rotate(
                    self._vault.seal(json.loads(row.config_json or "{}"), paths), paths
                )
                if changed or config != json.loads(row.config_json or "{}"):
                    row.config_json = json.dumps(config, ensure_ascii=False)
                    done += 1
        return done

    async def toggle_interface(self, interface_id: uuid.UUID, enable: bool) -> PluginInterface:
        async with self._db.write() as s:
            row = await s.get(PluginInterface, interface_id)
            if row is None:
                raise NotFound(f"interface {interface_id} not found")
            if enable and not row.enabled:
                self._refuse_unusable(row.plugin_id)
            changed = row.enabled != enable
            if changed:
                row.enabled = enable
                row.updated_at = utcnow()
        if changed:
            self.interface_changed(interface_id)
        return row

    async def delete_interface(self, interface_id: uuid.UUID) -> None:
        async with self._db.write() as s:
            row = await s.get(PluginInterface, interface_id)
            if row is None:
                raise NotFound(f"interface {interface_id} not found")
            n = (
                await s.execute(select(func.count()).select_from(Instance).where(Instance.interface_id == interface_id))
            ).scalar_one()
            if n:
                raise FailedPrecondition(
                    f"interface {row.display_name!r} still has {n} local instance(s); "
                    "disable it instead, or move the instances first"
                )
            await s.delete(row)
        self.interface_changed(interface_id)

    # ---- enabled-by-type listings (cached: they back the admin UI's hot pages) ----

    async def providers(self) -> list[ProviderEntry]:
        hit = self._listings.get("providers")
        if hit is not None:
            return cast(list[ProviderEntry], hit)
        generation = self._listings.generation
        rows = await self._enabled(PROVIDER_TYPES)
        results = await asyncio.gather(*(self._spec_template(r) for r in rows))
        entries = [
            ProviderEntry(
                interface_id=r.id,
                name=r.display_name,
                provider_type="first_party" if r.plugin_type == "first_party_provider" else "upstream",
                is_healthy=r.is_healthy,
                spec_template=tpl if tpl is not None else empty_template(),
            )
            for r, tpl in zip(rows, results, strict=True)
        ]
        ttl = _DEGRADED_LISTING_TTL if any(t is None for t in results) else float("inf")
        self._listings.put("providers", entries, generation, ttl)
        return entries

    async def channels(self, plugin_type: str) -> list[ChannelEntry]:
        hit = self._listings.get(plugin_type)
        if hit is not None:
            return cast(list[ChannelEntry], hit)
        generation = self._listings.generation
        entries = [ChannelEntry(r.id, r.display_name, r.is_healthy) for r in await self._enabled((plugin_type,))]
        self._listings.put(plugin_type, entries, generation)
        return entries

    async def _enabled(self, types: tuple[str, ...]) -> list[PluginInterface]:
        q = (
            select(PluginInterface)
            .where(PluginInterface.enabled.is_(True), PluginInterface.plugin_type.in_(types))
            .order_by(PluginInterface.created_at, PluginInterface.id)
        )
        async with self._db.read() as s:
            return list((await s.execute(q)).scalars())

    async def _spec_template(self, row: PluginInterface) -> dict[str, Any] | None:
        """The interface's spec template; None when it cannot be had (the listing shows it without
        fields, and is recomputed soon)."""
        try:
            binding = self._runtime.bind_row(row)
        except Exception as exc:
            log.warning("interface %s: no spec template: %s", row.id, getattr(exc, "message", exc))
            return None
        try:
            return await spec_template(self._runtime, binding)
        except Exception as exc:
            log.warning("interface %s: spec_template failed: %s", row.id, getattr(exc, "message", exc))
            return None


def _check_name(display_name: str) -> str:
    name = display_name.strip()
    if not name:
        raise InvalidArgument("display_name is required")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"display_name is longer than {MAX_NAME} characters")
    return name
