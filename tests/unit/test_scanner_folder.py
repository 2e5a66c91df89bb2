"""The plugin scanner in process, on a temporary folder and SQLite database: what one scan adds,
changes, removes and reports broken, and the rows it keeps (tests/test_scanner.py watches the
same through a running server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import _SharedZygote
from sqlalchemy import select

from rustbill.db import Database, Plugin, PluginInterface
from rustbill.ids import utcnow
from rustbill.plugins import PluginRegistry, PluginScanner


def _source(version: str, amount: str = "1.00") -> str:
    return f'''PLUGIN_TYPE = "upstream_provider"


def version():
    return "{version}"


def config_schema():
    return {{"type": "object", "properties": {{}}}}


def query_price(config, spec):
    return {{"amount": "{amount}", "currency": "USD", "billing_cycle": "monthly"}}
'''


class Folder:
    def __init__(self, path: Path, db: Database, scanner: PluginScanner, registry: PluginRegistry) -> None:
        self.path, self.db, self.scanner, self.registry = path, db, scanner, registry
        self._tick = 0

    def put(self, name: str, text: str) -> None:
        target = self.path / name
        target.write_text(text)
        self._tick += 1  # (a distinct mtime per write: the scanner looks at mtime and size first)
        stamp = 1_700_000_000 + self._tick
        os.utime(target, (stamp, stamp))

    async def rows(self) -> dict[str, Plugin]:
        async with self.db.read() as s:
            return {p.plugin_id: p for p in (await s.execute(select(Plugin))).scalars()}


@pytest.fixture
async def folder(tmp_path: Path) -> AsyncIterator[Folder]:
    (tmp_path / "plugins").mkdir()
    db = Database(f"sqlite:///{tmp_path / 'scan.sqlite3'}")
    await db.migrate()
    registry = PluginRegistry()
    registry.workers.zygote = _SharedZygote(registry.workers._exited)  # type: ignore[assignment]
    yield Folder(tmp_path / "plugins", db, PluginScanner(db, registry, tmp_path / "plugins"), registry)
    await registry.close()
    await db.dispose()


async def test_new_changed_and_vanished_files(folder: Folder) -> None:
    folder.put("alpha.py", _source("1.0.0"))
    folder.put("beta.py", _source("1.0.0"))
    folder.put("README.md", "not a plugin")
    report = await folder.scanner.scan()
    assert (sorted(report.added), report.changed, report.removed, report.broken) == (["alpha", "beta"], [], [], {})
    rows = await folder.rows()
    assert {pid: (r.plugin_type, r.version, r.file_present) for pid, r in rows.items()} == {
        "alpha": ("upstream_provider", "1.0.0", True),
        "beta": ("upstream_provider", "1.0.0", True),
    }

    report = await folder.scanner.scan()  # nothing changed: nothing reloaded
    assert (report.added, report.changed, report.removed) == ([], [], [])

    folder.put("alpha.py", _source("1.1.0"))
    (folder.path / "beta.py").unlink()
    report = await folder.scanner.scan()
    assert (report.added, report.changed, report.removed) == ([], ["alpha"], ["beta"])
    rows = await folder.rows()
    assert set(rows) == {"alpha"} and rows["alpha"].version == "1.1.0"
    assert folder.registry.get("alpha") is not None and folder.registry.get("beta") is None


async def test_a_broken_file_is_reported_and_the_last_good_version_stays(folder: Folder) -> None:
    folder.put("gamma.py", _source("1.0.0"))
    await folder.scanner.scan()
    folder.put("gamma.py", 'PLUGIN_TYPE = "upstream_provider"\nraise RuntimeError("boom at import")\n')
    folder.put("Bad-Name.py", _source("1.0.0"))
    folder.put("delta.py", "def send(config, message):\n    return None\n")
    report = await folder.scanner.scan()
    assert "exception at import: RuntimeError: boom at import" in report.broken["gamma"]
    assert "missing PLUGIN_TYPE" in report.broken["delta"]
    assert "file name is not a valid plugin id" in report.broken["Bad-Name"]
    assert folder.registry.get("gamma") is not None  # the last good version still serves
    rows = await folder.rows()
    assert set(rows) == {"gamma"} and rows["gamma"].version == "1.0.0"


async def test_a_vanished_plugin_that_interfaces_use_keeps_its_row(folder: Folder) -> None:
    folder.put("epsilon.py", _source("1.0.0"))
    await folder.scanner.scan()
    row: Any = (await folder.rows())["epsilon"]
    async with folder.db.write() as s:
        s.add(PluginInterface(id=uuid.uuid4(), plugin_def_id=row.id, plugin_type=row.plugin_type,
                              plugin_id="epsilon", display_name="Keep me", config_json="{}",
                              config_schema="{}", created_at=utcnow()))  # fmt: skip
    (folder.path / "epsilon.py").unlink()
    report = await folder.scanner.scan()
    assert report.removed == ["epsilon"]
    rows = await folder.rows()
    assert rows["epsilon"].file_present is False  # (its interface's configuration is not lost)
    assert folder.registry.get("epsilon") is None
