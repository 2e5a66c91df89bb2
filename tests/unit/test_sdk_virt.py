"""rustbill.sdk.virt against libvirt's own test driver (``test:///default``, in this process): the
cached connection, libvirt errors as PluginErrors, and what the host has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rustbill import sdk

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is a test dependency (scripts/test installs it)")
from rustbill.sdk import virt  # noqa: E402

URI = "test:///default"


@pytest.fixture
def conn() -> Iterator[virt.Connection]:
    c = virt.connect(URI)
    yield c
    virt.close_all()


def test_one_connection_per_uri_and_credentials_reopened_when_closed(conn: virt.Connection) -> None:
    assert virt.connect(URI) is conn
    assert virt.connect(URI, username="someone") is not conn  # other credentials: another connection
    conn.conn.close()
    assert not conn.alive
    again = virt.connect(URI)
    assert again is not conn and again.alive


def test_a_uri_nobody_answers_is_unavailable_and_says_so() -> None:
    with pytest.raises(sdk.PluginError) as caught:
        virt.connect("qemu+tcp://127.0.0.1:1/system", timeout=5)
    assert caught.value.code == "UNAVAILABLE"
    assert caught.value.message.startswith("cannot reach libvirt at qemu+tcp://127.0.0.1:1/system")
    assert "is libvirtd/virtproxyd listening there" in caught.value.message


def test_errors_inside_calls_get_their_status_and_name_what(conn: virt.Connection) -> None:
    with pytest.raises(sdk.NotFound, match=r"^domain 'nope': Domain not found"), virt.calls(conn, "domain 'nope'"):
        conn.conn.lookupByName("nope")
    with pytest.raises(sdk.InvalidArgument, match=r"^defining: libvirt refused it as invalid"):
        with virt.calls(conn, "defining"):
            conn.conn.defineXML("<domain type='test'><name>x</name></domain")
    with pytest.raises(ZeroDivisionError), virt.calls(conn, "other errors pass"):
        _ = 1 / 0


def test_a_lost_connection_is_unavailable_or_unknown_when_the_call_may_have_changed_something(
    conn: virt.Connection,
) -> None:
    conn.conn.close()
    err = virt.error(libvirt.libvirtError("gone"), "starting domain 'a'", conn)
    assert (err.code, err.message) == ("UNAVAILABLE", "starting domain 'a': lost the connection to libvirt at "
                                       "test:///default: gone")  # fmt: skip
    err = virt.error(libvirt.libvirtError("gone"), "starting domain 'a'", conn, uncertain=True)
    assert err.code == "DEADLINE_EXCEEDED" and "whether the change took effect is unknown" in err.message
    assert virt.connect(URI) is not conn  # (the dead one was dropped from the cache)


def test_or_none_and_is_error(conn: virt.Connection) -> None:
    assert virt.or_none("NO_DOMAIN", conn.conn.lookupByName, "nope") is None
    assert virt.or_none("NO_DOMAIN", conn.conn.lookupByName, "test").name() == "test"
    with pytest.raises(libvirt.libvirtError) as caught:
        virt.or_none("NO_NETWORK", conn.conn.lookupByName, "nope")
    assert virt.is_error(caught.value, "NO_STORAGE_POOL", "NO_DOMAIN")
    assert not virt.is_error(caught.value, "NO_NETWORK")


def test_what_the_host_has(conn: virt.Connection) -> None:
    info = virt.host_info(conn)
    assert (info["uri"], info["driver"], info["host_cpus"]) == (URI, "TEST", 16)
    assert info["libvirt_version"].count(".") == 2
    assert ("i686", "test") in virt.guest_types(conn)
    assert virt.guest_types(conn, "no-such-os-type") == []
    problems: list[str] = []
    pools = virt.active(conn, "storage pool", ["default-pool", "ssd", "default-pool"], problems)
    assert list(pools) == ["default-pool"]
    assert problems == ["storage pool 'ssd' does not exist (pools: default-pool)"]
    conn.conn.networkLookupByName("default").destroy()
    try:
        problems = []
        assert virt.active(conn, "network", ["default"], problems) == {}
        assert problems == ["network 'default' is not active (virsh net-start default)"]
    finally:
        conn.conn.networkLookupByName("default").create()
