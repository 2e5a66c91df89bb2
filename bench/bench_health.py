"""Background health round: 200 enabled interfaces whose health_check takes 100 ms.

Measures, in process against a real database (SQLite by default, ``--db postgresql://...`` for a
fresh PostgreSQL database), one ``HealthService.check_all()`` round:
  - baseline: a round with 1 interface (≈ one 100 ms check plus one write);
  - 200 interfaces with 100 ms checks (target: well under 1 s);
  - 200 interfaces of which one hangs (health_check timeout 1 s): the round ends at the timeout,
    not later, and the 199 others are stored.
Prints the figures and the ratio to the baseline. A benchmark, not a test: it always exits 0.

    python bench/bench_health.py [--db URL] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

PLUGIN = """
import asyncio
PLUGIN_TYPE = "notifier"
async def health_check(config):
    await asyncio.sleep(config.get("sleep", 0.1))
def send(config, message):
    return None
"""


async def main(db_url: str | None, concurrency: int) -> None:
    from rustbill.db import Database, Plugin, PluginInterface
    from rustbill.domain import Catalog, HealthService
    from rustbill.ids import utcnow
    from rustbill.plugins import PluginRegistry, PluginRuntime
    from rustbill.vault import Vault

    tmp = Path(tempfile.mkdtemp())
    admin_url = None
    if db_url and db_url.startswith("postgresql"):
        import asyncpg

        admin_url = db_url
        name = f"rb_bench_health_{secrets.token_hex(3)}"
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = db_url.rsplit("/", 1)[0] + "/" + name
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    await db.migrate()
    path = tmp / "hc.py"
    path.write_text(PLUGIN)
    registry = PluginRegistry()
    registry.put(await registry.load(path, path.read_bytes(), "hc"))
    runtime = PluginRuntime(db, registry, timeouts={"health_check": 1.0})
    catalog = Catalog(db, registry, runtime, Vault([Vault.new_key()]))
    health = HealthService(db, runtime, catalog, concurrency=concurrency)

    now = utcnow()
    plugin = Plugin(plugin_id="hc", plugin_type="notifier", content_hash="x", version="0.0.0", created_at=now,
                    updated_at=now)  # fmt: skip
    async with db.write() as s:
        s.add(plugin)

    async def make(n: int, hang: int = 0) -> None:
        async with db.write() as s:
            await s.execute(PluginInterface.__table__.delete())
            for i in range(n):
                cfg = {"sleep": 60} if i < hang else {}
                s.add(PluginInterface(plugin_def_id=plugin.id, plugin_type="notifier", plugin_id="hc",
                                      display_name=f"n{i}", enabled=True, config_json=json.dumps(cfg),
                                      config_schema="{}", created_at=now, updated_at=now))  # fmt: skip
        runtime.evict_all()

    async def round_time() -> tuple[float, int]:
        t = time.perf_counter()
        n = await health.check_all()
        return time.perf_counter() - t, n

    try:
        await make(1)
        await round_time()  # warm-up
        base, _ = min([await round_time() for _ in range(3)])
        await make(200)
        await round_time()
        full = min([await round_time() for _ in range(3)])
        await make(200, hang=1)
        hang_t, hang_n = await round_time()
        print(f"database: {db.dialect}   concurrency: {concurrency}")
        print(f"{'round':<44}{'seconds':>9}{'x baseline':>12}")
        print(f"{'baseline: 1 interface, 100 ms check':<44}{base:>9.3f}{1:>12.1f}")
        print(f"{'200 interfaces, 100 ms checks':<44}{full[0]:>9.3f}{full[0] / base:>12.1f}"
              f"   target < 1 s: {'PASS' if full[0] < 1 else 'MISS'}")  # fmt: skip
        print(f"{'200 interfaces, one hangs (timeout 1 s)':<44}{hang_t:>9.3f}{hang_t / base:>12.1f}"
              f"   stored {hang_n}/200; ends at the timeout: {'PASS' if hang_t < 2 else 'MISS'}")  # fmt: skip
    finally:
        await runtime.close()
        await db.dispose()
        if admin_url:
            import asyncpg

            conn = await asyncpg.connect(admin_url)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="postgresql://user@host:port/postgres to bench on a fresh PostgreSQL database")
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()
    asyncio.run(main(args.db, args.concurrency))
