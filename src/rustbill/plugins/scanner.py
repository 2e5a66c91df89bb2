"""PluginScanner: keeps the ``plugins`` table and the registry in step with ``plugins/*.py``.

At start and then every ``plugins.rescan_seconds`` it looks at the folder:
- a new file is loaded, registered and inserted;
- a changed file (new content) is reloaded; the row gets the new version, has_admin_page and
  ``updated_at``; a broken new version is reported and the last good one stays in use;
- a vanished file is unregistered; its row is deleted unless interfaces use it, in which case
  it is kept (``file_present`` false) so that their configuration is never lost;
- a broken file (syntax error, missing or unknown ``PLUGIN_TYPE``, an exception at import, a
  function with the wrong parameters, an import that hangs or ends its process) is logged once per
  content, with file and reason, and skipped.

Files are executed in worker processes (``host.py``), never in the server's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import Database, Plugin, PluginInterface
from ..ids import utcnow
from .loader import LoadedPlugin, PluginLoadError, content_hash, plugin_id_for
from .registry import PluginRegistry

__all__ = ["PluginScanner", "ScanReport"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ScanReport:
    added: list[str]
    changed: list[str]
    removed: list[str]
    broken: dict[str, str]


class PluginScanner:
    def __init__(
        self,
        db: Database,
        registry: PluginRegistry,
        folder: Path,
        *,
        import_timeout: float = 10.0,
    ) -> None:
        self._db = db
        self._registry = registry
        self.folder = folder
        self._import_timeout = import_timeout
        # path -> (mtime_ns, size) of the content last looked at
        self._stat: dict[Path, tuple[int, int]] = {}
        # plugin_id -> hash of a broken content already reported
        self._broken: dict[str, str] = {}
        # files whose names cannot be plugin ids, already reported
        self._bad_names: set[str] = set()
        self._first = True
        self._lock = asyncio.Lock()

    async def scan(self) -> ScanReport:
        """Look at the folder once and apply what changed."""
        async with self._lock:
            return await self._scan()

    async def run(self, interval: float) -> None:
        """Rescan every ``interval`` seconds until cancelled; a failed scan is logged and retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("plugin scan failed; retrying in %.1fs", interval)

    async def _scan(self) -> ScanReport:
        report = ScanReport([], [], [], {})
        present: dict[str, Path] = {}
        bad_names: set[str] = set()
        try:
            entries = sorted(self.folder.iterdir()) if self.folder.is_dir() else []
        except OSError as exc:
            log.error("plugins folder %s cannot be read: %s", self.folder, exc)
            return report
        for path in entries:
            pid = plugin_id_for(path)
            if pid is None:
                if path.suffix == ".py" and not path.name.startswith(("_", ".")):
                    bad_names.add(path.name)
                    reason = f"{path.name}: file name is not a valid plugin id (lower-case letters, digits, _)"
                    report.broken[path.stem] = reason
                    if path.name not in self._bad_names:
                        log.error("plugin file skipped: %s", reason)
                continue
            if not path.is_file():
                continue
            present[pid] = path
            await self._look_at(pid, path, report)

        for pid in self._registry.ids() - present.keys():
            self._registry.remove(pid)
            self._stat = {p: s for p, s in self._stat.items() if plugin_id_for(p) != pid}
            await self._vanished(pid)
            report.removed.append(pid)
            log.warning("plugin %s: file vanished from %s", pid, self.folder)
        self._bad_names = bad_names  # reported once while they stay
        for pid in list(self._broken):
            if pid not in present:
                self._broken.pop(pid)
                self._registry.load_errors.pop(pid, None)
        if self._first:
            self._first = False
            await self._reconcile_rows(set(present))
        return report

    async def _look_at(self, pid: str, path: Path, report: ScanReport) -> None:
        try:
            st = path.stat()  # noqa: ASYNC240 (one stat, fast)
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if self._stat.get(path) == stamp:
            return
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            log.error("plugin %s: cannot read %s: %s", pid, path, exc)
            return
        self._stat[path] = stamp
        digest = content_hash(data)
        current = self._registry.get(pid)
        if current is not None and current.content_hash == digest:
            return
        if self._broken.get(pid) == digest:
            return
        try:
            # In a worker process of its own: a file that hangs or exits at import hurts only that.
            loaded = await self._registry.load(path, data, pid, seconds=self._import_timeout)
        except PluginLoadError as exc:
            self._report_broken(pid, digest, str(exc), report)
            return
        self._broken.pop(pid, None)
        self._registry.load_errors.pop(pid, None)
        if current is None:
            # Registered before its row is written: a listing that sees the row sees its schema
            # and description too, never a plugin half there (ListPlugins reads rows, then the registry).
            self._registry.put(loaded)
            try:
                await self._upsert(loaded)
            except BaseException:
                self._registry.remove(pid)
                self._stat.pop(path, None)  # (the next scan tries again)
                raise
        else:
            await self._upsert(loaded)
            self._registry.put(loaded)
        (report.changed if current is not None else report.added).append(pid)
        if current is None:
            log.info("plugin %s loaded (%s, version %s)", pid, loaded.plugin_type, loaded.version)
        else:
            log.info("plugin %s reloaded (version %s → %s)", pid, current.version, loaded.version)

    def _report_broken(self, pid: str, digest: str, reason: str, report: ScanReport) -> None:
        report.broken[pid] = reason
        self._registry.load_errors[pid] = reason
        if self._broken.get(pid) == digest:
            return
        self._broken[pid] = digest
        kept = " (the previous version stays in use)" if self._registry.get(pid) else ""
        log.error("plugin file skipped: %s%s", reason, kept)

    async def _upsert(self, p: LoadedPlugin) -> None:
        for _ in range(3):
            try:
                async with self._db.write() as s:
                    row = (await s.execute(select(Plugin).where(Plugin.plugin_id == p.plugin_id))).scalar_one_or_none()
                    if row is None:
                        now = utcnow()
                        s.add(
                            Plugin(
                                plugin_id=p.plugin_id,
                                plugin_type=p.plugin_type,
                                has_admin_page=p.has_admin_page,
                                version=p.version,
                                content_hash=p.content_hash,
                                file_present=True,
                                created_at=now,
                                updated_at=now,
                            )
                        )
                        return
                    if row.content_hash == p.content_hash and row.file_present and row.plugin_type == p.plugin_type:
                        return
                    if row.plugin_type != p.plugin_type:
                        log.warning("plugin %s changed type %s → %s", p.plugin_id, row.plugin_type, p.plugin_type)
                    # Interfaces follow the plugin's current schema and admin page (the form and
                    # validation must match the code that runs); plugin_version stays the
                    # creation snapshot, as the spec says.
                    await s.execute(
                        update(PluginInterface)
                        .where(PluginInterface.plugin_def_id == row.id)
                        .values(
                            plugin_type=p.plugin_type,
                            config_schema=json.dumps(p.config_schema, ensure_ascii=False),
                            has_admin_page=p.has_admin_page,
                        )
                    )
                    row.plugin_type = p.plugin_type
                    row.has_admin_page = p.has_admin_page
                    row.version = p.version
                    row.content_hash = p.content_hash
                    row.file_present = True
                    row.updated_at = utcnow()
                return
            except IntegrityError:
                continue  # another process inserted it at the same moment: update instead

    async def _vanished(self, pid: str) -> None:
        async with self._db.write() as s:
            row = (await s.execute(select(Plugin).where(Plugin.plugin_id == pid))).scalar_one_or_none()
            if row is None:
                return
            await self._retire(s, row)

    async def _retire(self, s: AsyncSession, row: Plugin) -> None:
        used = (
            await s.execute(
                select(func.count()).select_from(PluginInterface).where(PluginInterface.plugin_def_id == row.id)
            )
        ).scalar_one()
        if used:
            if row.file_present:
                row.file_present = False
                row.updated_at = utcnow()
        else:
            with contextlib.suppress(IntegrityError):
                await s.execute(delete(Plugin).where(Plugin.id == row.id))

    async def _reconcile_rows(self, present: set[str]) -> None:
        """At the first scan: rows whose files went away while the server was down."""
        async with self._db.write() as s:
            rows = (await s.execute(select(Plugin).where(Plugin.file_present.is_(True)))).scalars().all()
            for row in rows:
                if row.plugin_id not in present or self._registry.get(row.plugin_id) is None:
                    if row.plugin_id in present and row.plugin_id in self._broken:
                        continue  # broken now, but the file is there: keep the row as it was
                    await self._retire(s, row)
