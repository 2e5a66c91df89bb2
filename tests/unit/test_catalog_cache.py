"""The catalog's cache of listings and rows (domain.catalog._Cache): a value read while a change
dropped the cache is not kept, so a GetPluginInterface that read a row just before a health check
wrote it does not keep serving the old row (seen on PostgreSQL in CI)."""

from __future__ import annotations

from rustbill.domain.catalog import _Cache


def test_a_value_read_across_a_drop_is_not_kept() -> None:
    cache = _Cache()
    before = cache.generation  # a read starts
    cache.drop(("row", 1))  # a health check writes row 1 meanwhile
    cache.put(("row", 1), "old row", before)  # the read ends with what it saw
    assert cache.get(("row", 1)) is None  # the next read goes to the database
    now = cache.generation
    cache.put(("row", 1), "new row", now)
    assert cache.get(("row", 1)) == "new row"


def test_dropping_one_key_keeps_the_others_and_nothing_drops_all() -> None:
    cache = _Cache()
    g = cache.generation
    cache.put(("row", 1), "a", g)
    cache.put(("row", 2), "b", g)
    cache.drop(("row", 1))
    assert (cache.get(("row", 1)), cache.get(("row", 2))) == (None, "b")
    cache.drop()
    assert cache.get(("row", 2)) is None


def test_a_listing_with_a_time_to_live_expires() -> None:
    cache = _Cache()
    cache.put("providers", ["x"], cache.generation, ttl=0.0)
    assert cache.get("providers") is None
    cache.put("providers", ["y"], cache.generation, ttl=60.0)
    assert cache.get("providers") == ["y"]
