"""What a provider that runs servers on hosts of its own needs besides prices (the built-in ``kvm``
and ``incus``): the connections it keeps open between calls, the name it gives what an order makes,
and the checks of the request id and of an admin action's target.

- ``Connections`` — connections (clients) cached per configuration, the least recently used dropped;
  for a blocking library that has no timeout of its own, ``Connections.open`` opens in a thread and
  waits no longer than the plugin says.
- ``order_request_id(spec)`` / ``find_request_id(request_id)`` — the request id ``create_instance`` and
  ``find_instance`` are given, or INVALID_ARGUMENT.
- ``order_name(prefix, slug, request_id, ...)`` — the name of what an order makes, the same on every
  retry of the order.
- ``instance_result(instance_id, status, ...)`` — one instance as the contract's functions return it.
- ``action_target(args, check)`` — the instance an ``admin_*`` action is for (``{"name": ...}``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from . import InvalidArgument, PluginError

C = TypeVar("C")


class _Opening(Generic[C]):
    """An open in progress, in a thread of its own, so that a caller can stop waiting for it."""

    __slots__ = ("conn", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.conn: C | None = None
        self.error: tuple[str, str] | None = None  # (code, message): a fresh PluginError per waiter


class Connections(Generic[C]):
    """Connections a plugin keeps open between calls, one per ``key`` (made with ``Connections.key``
    from what tells configurations apart: the URL, the credentials ...); past ``size`` the least
    recently used is dropped. Safe to use from several threads; ``lock`` is held by every method and
    may be held around several of them.

    A client that is made at once (an ``httpx.AsyncClient``): ``get`` it, else make it and ``put`` it;
    ``put`` returns the connections it displaced, for the plugin to close when it may. A blocking
    library with no timeout of its own (libvirt): ``open`` (below)."""

    def __init__(self, size: int = 16, *, name: str = "connection") -> None:
        self.size = size
        self.name = name  # names the threads of ``open``
        self.lock = threading.RLock()
        self._items: OrderedDict[str, C] = OrderedDict()
        self._opening: dict[str, _Opening[C]] = {}

    @staticmethod
    def key(*material: Any) -> str:
        """A key for ``material`` (JSON values; anything else as its ``str``). Only a hash of it is
        kept, but hash a secret yourself when a key of it may outlive the secret's change."""
        return hashlib.sha256(json.dumps(list(material), default=str).encode()).hexdigest()

    def get(self, key: str) -> C | None:
        """The connection of ``key`` (now the most recently used), or None."""
        with self.lock:
            conn = self._items.get(key)
            if conn is not None:
                self._items.move_to_end(key)
            return conn

    def put(self, key: str, conn: C) -> list[C]:
        """Keep ``conn`` for ``key``. Returns what it displaced: the connection ``key`` had, and the
        least recently used ones past ``size``."""
        with self.lock:
            old = self._items.pop(key, None)
            self._items[key] = conn
            displaced = [old] if old is not None else []
            while len(self._items) > self.size:
                displaced.append(self._items.popitem(last=False)[1])
            return displaced

    def discard(self, key: str, conn: C | None = None) -> None:
        """Forget the connection of ``key`` (only if it still is ``conn``, when given)."""
        with self.lock:
            if conn is None or self._items.get(key) is conn:
                self._items.pop(key, None)

    def items(self) -> list[tuple[str, C]]:
        with self.lock:
            return list(self._items.items())

    def clear(self) -> list[C]:
        """Forget every connection; returns them, for the plugin to close."""
        with self.lock:
            conns = list(self._items.values())
            self._items.clear()
            return conns

    def open(
        self,
        key: str,
        opener: Callable[[], C],
        *,
        timeout: float,
        too_slow: Callable[[], PluginError],
        usable: Callable[[C], bool] = lambda conn: True,
    ) -> C:
        """The connection of ``key``: the cached one while ``usable(conn)``, else a new one from
        ``opener()``. The opener runs in a daemon thread, one at a time per key (callers of the same
        key wait for the same open), so that a caller waits no longer than ``timeout`` seconds and
        then raises ``too_slow()``; an open that ends later is still kept. A ``PluginError`` the
        opener raises reaches every waiter (a fresh one each); any other exception is INTERNAL."""
        with self.lock:
            conn = self._items.get(key)
            if conn is not None:
                if usable(conn):
                    self._items.move_to_end(key)
                    return conn
                self._items.pop(key, None)
            op = self._opening.get(key)
            if op is None:
                op = self._opening[key] = _Opening()
                threading.Thread(
                    target=self._open, args=(key, op, opener), name=f"{self.name}-open", daemon=True
                ).start()
        if not op.done.wait(timeout):
            raise too_slow()
        if op.error is not None:
            raise PluginError(op.error[1], op.error[0])
        assert op.conn is not None
        return op.conn

    def _open(self, key: str, op: _Opening[C], opener: Callable[[], C]) -> None:
        try:
            op.conn = opener()
        except PluginError as exc:
            op.error = (exc.code, exc.message)
        except Exception as exc:
            op.error = ("INTERNAL", f"opening a {self.name} failed: {type(exc).__name__}: {exc}")
        with self.lock:
            self._opening.pop(key, None)
            if op.conn is not None:
                self.put(key, op.conn)  # the displaced ones are closed by their library once unused
        op.done.set()


def order_request_id(spec: Any) -> str:
    """The ``request_id`` the host puts in ``create_instance``'s spec (stripped), or INVALID_ARGUMENT."""
    request_id = str(spec.get("request_id") or "").strip() if isinstance(spec, Mapping) else ""
    if not request_id:
        raise InvalidArgument("create_instance needs spec['request_id'] (the host sets it)")
    return request_id


def find_request_id(value: Any) -> str:
    """``find_instance``'s ``request_id`` (stripped), or INVALID_ARGUMENT."""
    request_id = str(value or "").strip()
    if not request_id:
        raise InvalidArgument("find_instance needs the order's request_id")
    return request_id


def order_name(
    prefix: str, slug: str, request_id: str, *, max_length: int, valid: re.Pattern[str] | None = None
) -> str:
    """The name of what the order ``request_id`` makes: ``prefix`` + ``slug`` (the request id in the
    characters such names allow), or, when that is empty, longer than ``max_length`` or not ``valid``,
    ``prefix`` + 24 hex digits of the request id's SHA-256. Every retry of the order gets the same name,
    so that it finds what an earlier attempt made."""
    name = f"{prefix}{slug}"
    if not slug or len(name) > max_length or (valid is not None and not valid.match(name)):
        name = f"{prefix}{hashlib.sha256(request_id.encode()).hexdigest()[:24]}"
    return name


def instance_result(
    instance_id: str, status: str, ip_address: str = "", created_at: str | None = None
) -> dict[str, str]:
    """One instance as ``create_instance``, ``find_instance``, ``get_instance_status`` and
    ``sync_upstream_instances`` return it (``created_at``, RFC 3339, only when given)."""
    out = {"instance_id": instance_id, "status": status, "ip_address": ip_address}
    if created_at is not None:
        out["created_at"] = created_at
    return out


def action_target(args: Mapping[str, Any], check: Callable[[Any], str]) -> str:
    """The instance an ``admin_*`` action is for: ``args["name"]`` (or ``instance_id``), through the
    plugin's own name ``check`` (which raises INVALID_ARGUMENT)."""
    return check(args.get("name") or args.get("instance_id"))
