"""What a plugin over libvirt needs, whatever it runs there (the built-in ``kvm``; a plugin for another
libvirt driver — Xen, LXC, bhyve, Cloud Hypervisor — copies kvm and changes what it defines):

- ``module()`` — the ``libvirt`` module (libvirt-python), or FAILED_PRECONDITION saying it is not
  installed and how to install it: a plugin that imports this still loads, and prices, without it.
- ``connect(uri, ...)`` — the interface's connection, cached per URI and credentials (``sdk.Connections``),
  opened within a deadline (libvirt has none of its own) with the interface's username and password,
  kept alive (keepalive probes need libvirt's event loop, run here in a thread), reopened when dead.
  Failing to open says why: unreachable (UNAVAILABLE, with a hint), refused (PERMISSION_DENIED),
  credentials the interface lacks, or anything else (FAILED_PRECONDITION).
- ``calls(conn, what, uncertain=...)`` — a ``with`` block whose libvirt errors become PluginErrors with
  a clear status (``error``): a lost connection UNAVAILABLE (or DEADLINE_EXCEEDED, "outcome unknown",
  when the call may have changed something), missing domains NOT_FOUND, refused XML INVALID_ARGUMENT...
- ``is_error(exc, *names)`` / ``or_none(absent, call, *args)`` — libvirt error codes by name
  (``"NO_DOMAIN"`` for ``VIR_ERR_NO_DOMAIN``), and a lookup that answers None for "there is none".
- ``host_info(conn)`` / ``guest_types(conn)`` / ``active(conn, kind, names, problems)`` — what the host
  is (driver, versions, CPUs, memory), which guests it can run, and whether the storage pools and
  networks an interface names exist and are active (a health check's questions).

``from rustbill.sdk import virt`` (not imported by ``rustbill.sdk`` itself: it imports libvirt).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from . import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, PluginError, Unavailable
from .hosts import Connections

libvirt: Any = None  # the libvirt module (libvirt-python has no type hints), None when it is missing
_IMPORT_ERROR = ""
try:  # guarded: a plugin over libvirt must load (and price) on a server without libvirt-python
    libvirt = importlib.import_module("libvirt")
except (ImportError, OSError) as _exc:  # OSError: libvirtmod present but libvirt.so.0 missing
    _IMPORT_ERROR = f"{type(_exc).__name__}: {_exc}"
else:

    def _quiet(_ctx: Any, _err: Any) -> None:
        """libvirt prints every error to stderr by default; the plugin reports them itself."""

    libvirt.registerErrorHandler(_quiet, None)

__all__ = [
    "Connection",
    "active",
    "calls",
    "close_all",
    "connect",
    "error",
    "guest_types",
    "host_info",
    "is_error",
    "module",
    "or_none",
]

log = logging.getLogger("rustbill.plugin.libvirt")

# libvirt's error codes (virerror.h, libvirt.VIR_ERR_<name>) that mean "not allowed" and "this driver
# cannot" (names, so that this module loads without libvirt).
DENIED = ("AUTH_FAILED", "AUTH_CANCELLED", "AUTH_UNAVAILABLE", "ACCESS_DENIED", "OPERATION_DENIED")
UNSUPPORTED = ("NO_SUPPORT", "OPERATION_UNSUPPORTED")

# how transport failures read in libvirt messages, whatever error code they come with
_TRANSPORT = (
    "socket is closed",
    "end of file",
    "connection reset",
    "broken pipe",
    "connection refused",
    "error event on socket",  # (the peer closed the connection while libvirt polled it)
    "no route to host",
    "network is unreachable",
    "timed out",
    "name or service not known",
    "could not resolve",
)


def module() -> Any:
    """The libvirt module, or a clear FAILED_PRECONDITION when libvirt-python is not installed."""
    if libvirt is None:
        raise FailedPrecondition(
            "libvirt-python is not installed in the RustBill server's Python environment (import libvirt "
            f"failed: {_IMPORT_ERROR}); install it there with `pip install libvirt-python` (it builds against "
            "the system libvirt: Debian/Ubuntu packages libvirt-dev, pkg-config, gcc and python3-dev)"
        )
    return libvirt


class Connection:
    """One open connection (``conn``: a ``libvirt.virConnect``) and what to call it in messages."""

    __slots__ = ("conn", "key", "uri")

    def __init__(self, conn: Any, key: str, uri: str) -> None:
        self.conn = conn
        self.key = key
        self.uri = uri

    @property
    def where(self) -> str:
        return f"libvirt at {self.uri}"

    @property
    def alive(self) -> bool:
        try:
            return bool(self.conn.isAlive())
        except Exception:
            return False


_CONNS: Connections[Connection] = Connections(16, name="libvirt")


def connect(
    uri: str,
    *,
    username: str = "",
    password: str = "",
    timeout: float = 10.0,
    keepalive_interval: int = 5,
    keepalive_count: int = 3,
) -> Connection:
    """The cached connection of this URI and credentials, opened (within ``timeout`` seconds) when
    there is none or it died. ``keepalive_interval`` 0 turns keepalive off."""
    module()
    key = _CONNS.key(uri, username, hashlib.sha256(password.encode()).hexdigest())

    def usable(c: Connection) -> bool:
        if c.alive:
            return True
        log.warning("connection to %s was closed; reopening", uri)
        return False

    def too_slow() -> PluginError:
        return Unavailable(
            f"libvirt at {uri} did not complete the connection within {timeout:g}s (connect_timeout_seconds); "
            "is the host reachable and its libvirt daemon answering?"
        )

    def opener() -> Connection:
        return _open(uri, key, username, password, keepalive_interval, keepalive_count)

    return _CONNS.open(key, opener, timeout=timeout, too_slow=too_slow, usable=usable)


def _open(uri: str, key: str, username: str, password: str, interval: int, count: int) -> Connection:
    """Open the connection (in a thread of the cache's): the credentials, then keepalive."""
    lv = libvirt
    missing: list[str] = []

    def credentials(creds: list[list[Any]], _data: Any) -> int:
        for cred in creds:
            if cred[0] in (lv.VIR_CRED_USERNAME, lv.VIR_CRED_AUTHNAME):
                if not username:
                    missing.append("username")
                cred[4] = username or cred[3] or ""
            elif cred[0] in (lv.VIR_CRED_PASSPHRASE, lv.VIR_CRED_NOECHOPROMPT):
                if not password:
                    missing.append("password")
                    return -1
                cred[4] = password
            else:
                cred[4] = cred[3] or ""
        return 0

    test_driver = urlsplit(uri).scheme == "test"  # (in-process: no daemon, no keepalive)
    try:
        if not test_driver:
            _ensure_event_loop(lv)
        kinds = [lv.VIR_CRED_USERNAME, lv.VIR_CRED_AUTHNAME, lv.VIR_CRED_PASSPHRASE, lv.VIR_CRED_NOECHOPROMPT]
        conn = lv.openAuth(uri, [kinds, credentials, None], 0)
    except Exception as exc:
        if isinstance(exc, lv.libvirtError):
            raise _open_error(uri, exc, username, missing) from None
        raise PluginError(f"opening libvirt at {uri} failed: {type(exc).__name__}: {exc}", "INTERNAL") from None
    if interval > 0 and not test_driver:
        try:
            conn.setKeepAlive(interval, count)
        except Exception as exc:  # not supported by this driver: calls are then bounded by the host's timeouts
            log.debug("keepalive not enabled on %s: %s", uri, exc)
    log.info("opened %s", uri)
    return Connection(conn, key, uri)  # cached; past 16, the least recently used is closed once unused


def _ensure_event_loop(lv: Any) -> None:
    """libvirt keepalive needs an event loop: the default implementation, run in a daemon thread.
    Registered once per process (the flag lives on the libvirt module, which outlives plugin reloads)."""
    lock = lv.__dict__.setdefault("_rustbill_event_lock", threading.Lock())
    with lock:
        if getattr(lv, "_rustbill_event_loop", False):
            return
        lv.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    lv.virEventRunDefaultImpl()
                except Exception:
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        lv._rustbill_event_loop = True


def _open_error(uri: str, exc: Any, username: str, missing: list[str]) -> PluginError:
    msg = exc.get_error_message() or str(exc)
    if missing:
        return FailedPrecondition(
            f"libvirt at {uri} asks for a {' and a '.join(dict.fromkeys(missing))} but the interface has none; "
            "set username and password in its configuration"
        )
    if is_error(exc, *DENIED):
        who = f" (user {username!r})" if username else ""
        return PermissionDenied(f"libvirt at {uri} refused the connection{who}: {msg}")
    low = msg.lower()
    if is_error(exc, "SYSTEM_ERROR", "RPC", "NO_CONNECT", "INVALID_CONN") or any(s in low for s in _TRANSPORT):
        hint = ""
        if "connection refused" in low:
            hint = " (is libvirtd/virtproxyd listening there, with that transport enabled?)"
        elif "no such file" in low and "sock" in low:
            hint = " (is libvirtd or virtqemud running on that machine?)"
        elif "too large" in low or "unexpected" in low:
            hint = " (the peer does not speak the libvirt RPC protocol; is this a libvirt daemon port?)"
        return Unavailable(f"cannot reach libvirt at {uri}: {msg}{hint}")
    return FailedPrecondition(f"cannot open libvirt at {uri}: {msg}")


def close_all() -> None:
    """Forget every cached connection (tests; libvirt closes them when unused)."""
    for c in _CONNS.clear():
        try:
            c.conn.close()
        except Exception:
            pass


atexit.register(close_all)  # before the interpreter tears libvirt down (else noisy __del__ at exit)


def error(exc: Any, what: str, c: Connection | None, *, uncertain: bool = False) -> PluginError:
    """A libvirtError as a PluginError with a clear status, its message naming ``what``. ``uncertain``:
    the call may have changed something at the host, so a lost connection is "outcome unknown"."""
    msg = exc.get_error_message() or str(exc)
    if (c is not None and not c.alive) or is_error(exc, "RPC", "INVALID_CONN"):
        if c is not None:
            _CONNS.discard(c.key, c)
        where = c.where if c is not None else "libvirt"
        if uncertain:
            return PluginError(
                f"{what}: the connection to {where} was lost ({msg}); whether the change took effect is unknown "
                "(a retry of the same order finds what was made)",
                "DEADLINE_EXCEEDED",
            )
        return Unavailable(f"{what}: lost the connection to {where}: {msg}")
    if is_error(exc, "NO_DOMAIN"):
        return NotFound(f"{what}: {msg}")
    if is_error(exc, "NO_STORAGE_POOL", "NO_STORAGE_VOL", "NO_NETWORK"):
        return FailedPrecondition(f"{what}: {msg} (check the interface's storage_pool, network and images)")
    if is_error(exc, *DENIED):
        return PermissionDenied(f"{what}: libvirt denied it: {msg}")
    if is_error(exc, "OPERATION_TIMEOUT", "AGENT_UNRESPONSIVE"):
        return PluginError(f"{what}: {msg}", "DEADLINE_EXCEEDED")
    if is_error(exc, "XML_ERROR", "XML_DETAIL", "CONFIG_UNSUPPORTED", "INVALID_ARG"):
        return InvalidArgument(f"{what}: libvirt refused it as invalid: {msg}")
    if is_error(exc, *UNSUPPORTED):
        return FailedPrecondition(f"{what}: not supported by this libvirt driver ({msg})")
    return FailedPrecondition(f"{what}: {msg}")


@contextmanager
def calls(c: Connection, what: str, *, uncertain: bool = False) -> Iterator[None]:
    """libvirt errors raised inside become PluginErrors naming ``what`` (``error``)."""
    try:
        yield
    except PluginError:
        raise
    except Exception as exc:
        if libvirt is not None and isinstance(exc, libvirt.libvirtError):
            raise error(exc, what, c, uncertain=uncertain) from None
        raise


def is_error(exc: Any, *names: str) -> bool:
    """Whether a libvirtError's code is one of these (names of libvirt's VIR_ERR_* codes)."""
    return any(exc.get_error_code() == getattr(libvirt, f"VIR_ERR_{name}") for name in names)


def or_none(absent: str | tuple[str, ...], call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, or None when libvirt answers with the error ``absent`` (or one of them)."""
    try:
        return call(*args)
    except libvirt.libvirtError as exc:
        if is_error(exc, *((absent,) if isinstance(absent, str) else absent)):
            return None
        raise


# ---------------------------------------------------------------- what the host has


def _version(v: Any) -> str:
    v = int(v or 0)
    return f"{v // 1_000_000}.{(v // 1000) % 1000}.{v % 1000}"


def host_info(c: Connection) -> dict[str, Any]:
    """The host behind the connection: driver, hypervisor and libvirt versions (and this process's
    libvirt), host name, architecture, memory and CPUs (what a health check and an admin page show)."""
    conn = c.conn
    with calls(c, f"asking {c.where} for its versions"):
        driver = str(conn.getType())
        lib = _version(conn.getLibVersion())
        try:
            hv = _version(conn.getVersion())
        except libvirt.libvirtError:
            hv = ""
        try:
            hostname = str(conn.getHostname())
        except libvirt.libvirtError:
            hostname = ""
        node = conn.getInfo()  # [arch, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    return {
        "uri": c.uri,
        "driver": driver,
        "hypervisor_version": hv,
        "libvirt_version": lib,
        "client_libvirt_version": _version(libvirt.getVersion()),
        "hostname": hostname,
        "host_arch": str(node[0]),
        "host_memory_mib": int(node[1]),
        "host_cpus": int(node[2]),
    }


def guest_types(c: Connection, os_type: str = "hvm") -> list[tuple[str, str]]:
    """(architecture, domain type) pairs of the guests of ``os_type`` the host can run (its capabilities)."""
    with calls(c, f"capabilities of {c.where}"):
        caps = ET.fromstring(c.conn.getCapabilities())
    return [
        (arch.get("name", ""), dom.get("type", ""))
        for guest in caps.findall("guest")
        if (guest.findtext("os_type") or "").strip() == os_type
        for arch in guest.findall("arch")
        for dom in arch.findall("domain")
    ]


# What ``active`` looks up: (error when there is none, lookup, list, plural, the virsh command that starts one).
_KINDS = {
    "storage pool": ("NO_STORAGE_POOL", "storagePoolLookupByName", "listAllStoragePools", "pools", "virsh pool-start"),
    "network": ("NO_NETWORK", "networkLookupByName", "listAllNetworks", "networks", "virsh net-start"),
}


def active(c: Connection, kind: str, names: list[str], problems: list[str]) -> dict[str, Any]:
    """The storage pools or networks (``kind``: "storage pool" or "network") of these names that exist
    and are active; what is missing (with the names there are) or inactive goes to ``problems``."""
    absent, lookup, list_all, plural, start = _KINDS[kind]
    found = {}
    for name in dict.fromkeys(names):
        with calls(c, f"{kind} {name!r}"):
            obj = or_none(absent, getattr(c.conn, lookup), name)
            if obj is None:
                known = sorted(o.name() for o in getattr(c.conn, list_all)(0))
                listed = f"{plural}: {', '.join(known)}" if known else f"no {plural}"
                problems.append(f"{kind} {name!r} does not exist ({listed})")
            elif not obj.isActive():
                problems.append(f"{kind} {name!r} is not active ({start} {name})")
            else:
                found[name] = obj
    return found
