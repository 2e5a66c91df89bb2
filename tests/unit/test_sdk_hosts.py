"""sdk.Connections, the request ids, order names and action targets, in process: the parts kvm and
incus share. The kvm and incus suites exercise them through the plugins; these pin each rule."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from typing import Any

import pytest

from rustbill import sdk


def refused(code: str, text: str, fn: Any, *args: Any) -> None:
    with pytest.raises(sdk.PluginError) as info:
        fn(*args)
    assert info.value.code == code and text in info.value.message, (info.value.code, info.value.message)


def test_the_cache_keeps_the_most_recently_used_and_returns_what_it_displaced() -> None:
    conns: sdk.Connections[str] = sdk.Connections(2)
    assert conns.key("u", 1) == conns.key("u", 1) != conns.key("u", 2)
    assert conns.put("a", "A") == [] and conns.put("b", "B") == []
    assert conns.get("a") == "A"  # now the most recently used: b goes first
    assert conns.put("c", "C") == ["B"]
    assert conns.put("a", "A2") == ["A"]
    assert [k for k, _ in conns.items()] == ["c", "a"]
    conns.discard("a", "A")  # no longer a's connection: kept
    assert conns.get("a") == "A2"
    conns.discard("a")
    assert conns.get("a") is None and conns.clear() == ["C"] and conns.items() == []


def test_open_runs_one_opener_per_key_and_stops_waiting_at_the_timeout() -> None:
    conns: sdk.Connections[str] = sdk.Connections()
    release, calls = threading.Event(), []

    def opener() -> str:
        calls.append(1)
        release.wait(5)
        return "conn"

    def too_slow() -> sdk.PluginError:
        return sdk.Unavailable("too slow")

    started = time.monotonic()
    refused("UNAVAILABLE", "too slow", lambda: conns.open("k", opener, timeout=0.1, too_slow=too_slow))
    refused("UNAVAILABLE", "too slow", lambda: conns.open("k", opener, timeout=0.1, too_slow=too_slow))
    assert time.monotonic() - started < 2 and len(calls) == 1  # the second caller waited for the same open
    release.set()
    assert conns.open("k", opener, timeout=5, too_slow=too_slow) == "conn"
    assert conns.get("k") == "conn" and len(calls) == 1
    # an unusable connection is opened again
    assert conns.open("k", lambda: "new", timeout=5, too_slow=too_slow, usable=lambda c: c != "conn") == "new"


def test_open_hands_the_openers_error_to_every_caller() -> None:
    conns: sdk.Connections[str] = sdk.Connections()

    def slow() -> sdk.PluginError:
        return sdk.Unavailable("slow")

    def refuse() -> str:
        raise sdk.PermissionDenied("no entry")

    def broken() -> str:
        raise OSError("bad")

    for _ in range(2):
        refused("PERMISSION_DENIED", "no entry", lambda: conns.open("k", refuse, timeout=5, too_slow=slow))
    refused("INTERNAL", "OSError: bad", lambda: conns.open("j", broken, timeout=5, too_slow=slow))
    assert conns.items() == []


def test_request_ids_are_required_and_stripped() -> None:
    assert sdk.order_request_id({"request_id": " r-1 "}) == "r-1"
    refused("INVALID_ARGUMENT", "create_instance needs spec['request_id']", sdk.order_request_id, {"request_id": ""})
    refused("INVALID_ARGUMENT", "create_instance needs spec['request_id']", sdk.order_request_id, "r-1")
    assert sdk.find_request_id(" r-1") == "r-1"
    refused("INVALID_ARGUMENT", "find_instance needs the order's request_id", sdk.find_request_id, None)


def test_order_names_fall_back_to_a_hash_of_the_request_id() -> None:
    assert sdk.order_name("rb-", "abc", "ABC", max_length=10) == "rb-abc"
    hashed = "rb-" + hashlib.sha256(b"a--").hexdigest()[:24]
    assert sdk.order_name("rb-", "", "a--", max_length=64) == hashed  # no slug
    assert sdk.order_name("rb-", "x" * 62, "a--", max_length=64) == hashed  # too long
    assert sdk.order_name("rb-", "a--", "a--", max_length=64, valid=re.compile(r"^[a-z-]*[a-z]$")) == hashed


def test_action_target_takes_name_or_instance_id_through_the_check() -> None:
    def check(value: Any) -> str:
        if not value:
            raise sdk.InvalidArgument("no name")
        return str(value)

    assert sdk.action_target({"name": "a", "instance_id": "b"}, check) == "a"
    assert sdk.action_target({"instance_id": "b"}, check) == "b"
    refused("INVALID_ARGUMENT", "no name", sdk.action_target, {}, check)


def test_instance_result_has_created_at_only_when_given() -> None:
    assert sdk.instance_result("a", "running") == {"instance_id": "a", "status": "running", "ip_address": ""}
    assert sdk.instance_result("a", "stopped", "10.0.0.1", "")["created_at"] == ""
