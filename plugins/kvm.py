"""kvm — first-party provider: opens KVM virtual machines on your own hosts through libvirt
(``libvirt-python``, https://libvirt.org/html/libvirt-libvirt-domain.html).

- One interface is one libvirt connection URI (``qemu:///system``, ``qemu+ssh://root@host/system``,
  ``qemu+tls://host/system``, or ``test:///default`` / ``test:///path/node.xml`` for libvirt's built-in
  test driver). Connections are cached per URI (and credentials) in the plugin's process and reopened
  when they die; opening one is bounded by ``connect_timeout_seconds`` (``rustbill.sdk.virt``).
- ``create_instance``: a root volume in ``storage_pool`` (blank, a clone of the OS image's volume, or a
  qcow2 overlay on it) sized from ``disk_gb``, then ``virDomainDefineXML`` with vCPUs, memory, the volume
  and a NIC on ``network`` (or ``bridge``) with the bandwidth as libvirt ``<bandwidth>``, then
  ``virDomainCreate``. The domain name and UUID come from the host's ``request_id``, so a retry finds the
  domain it already made. A failure removes what this call made (volume, definition).
- ``find_instance`` (the host settling an order whose outcome is unknown): the domain named after the
  ``request_id`` (or with its UUID) if its metadata names that request, else None.
- ``get_instance_status``: the domain's state (``virDomainGetInfo``) mapped to running / stopped /
  paused / ...; ``sync_upstream_instances``: every domain of the connection (``virConnectListAllDomains``).
- ``query_price``/``sync_products``/``spec_template`` come from the price rules and plans in the config
  (decimal strings, never floats) and work without libvirt.
- ``health_check`` opens the connection and reports hypervisor and libvirt versions, or precisely why it
  cannot connect; then the pool, network, OS image volumes and guest capabilities must be there.
- ``admin_page`` lists the domains; ``admin_start``/``admin_stop``/``admin_reboot``/``admin_destroy``/
  ``admin_suspend``/``admin_resume``/``admin_delete`` act on one (``{"name": ...}``).

libvirt comes through ``rustbill.sdk.virt``, which also turns its errors into clear statuses and asks
the host what it has. Its import is guarded: without libvirt-python the plugin still loads (prices and
products work) and everything that needs libvirt fails with FAILED_PRECONDITION saying it is not
installed.

See docs/builtin/kvm.md.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rustbill import sdk
from rustbill.sdk import virt  # the libvirt connection and its errors (loads without libvirt-python)

libvirt = virt.libvirt  # the libvirt module; None without libvirt-python (then virt.module() says so)

PLUGIN_TYPE = "first_party_provider"

log = sdk.logger(__name__)

# virDomainState -> the status RustBill shows
STATUS = {
    0: "unknown",  # VIR_DOMAIN_NOSTATE
    1: "running",  # VIR_DOMAIN_RUNNING
    2: "running",  # VIR_DOMAIN_BLOCKED (running, waiting on a resource)
    3: "paused",  # VIR_DOMAIN_PAUSED
    4: "stopping",  # VIR_DOMAIN_SHUTDOWN (being shut down)
    5: "stopped",  # VIR_DOMAIN_SHUTOFF
    6: "crashed",  # VIR_DOMAIN_CRASHED
    7: "suspended",  # VIR_DOMAIN_PMSUSPENDED (guest suspended to RAM)
}
_ADDRESS_SOURCES = {"lease": 0, "agent": 1, "arp": 2}  # VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_*
_UNDEFINE_FLAGS = (1 | 2 | 4 | 16, 1 | 2, 0)  # managed save, snapshots, nvram, checkpoints; then fewer

META_NS = "https://rustbill.dev/xmlns/libvirt/instance/1.0"
ET.register_namespace("rb", META_NS)
_UUID_NS = uuid.UUID("5f0c7a52-3d7e-4c59-9a43-2b1e6d2f9a10")  # domain UUID = uuid5(_UUID_NS, request_id)
_GIB = 1024**3
_NAME_RE = re.compile(r"^[^/\s\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]{0,198}[^/\s\x00-\x1f\x7f])?$")
_OBJ_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.+:@-]{0,99}$"
_OPT_OBJ_NAME = r"^([A-Za-z0-9_][A-Za-z0-9_.+:@-]{0,99})?$"
_BRIDGE = r"^([A-Za-z0-9_.:-]{1,15})?$"

# What an interface's config means when a key is left out (the schema below shows the same defaults).
DEFAULTS: dict[str, Any] = {
    "uri": "", "username": "", "password": "", "connect_timeout_seconds": 10, "keepalive_interval_seconds": 5,
    "keepalive_count": 3, "storage_pool": "default", "volume_format": "qcow2", "network": "default", "bridge": "",
    "nic_model": "virtio", "domain_type": "kvm", "arch": "x86_64", "machine": "", "cpu_mode": "host-passthrough",
    "vnc": True, "name_prefix": "rb-", "images": {}, "default_os": "", "start_on_create": True, "autostart": True,
    "address_sources": ["lease", "arp"], **sdk.PRICING_DEFAULTS,
}  # fmt: skip


# Price rules, plans, regions, OS images and spec limits: docs/plugins.md, "Selling servers".
PRICING = sdk.ServerPricing(DEFAULTS, unit="domain", cpu="vCPU", disk="root volume")


def version():
    return "1.1.0"


def config_schema():
    # One property a line or two (fmt: skip keeps them so): the descriptions are what the console shows.
    p = sdk.prop
    image = sdk.object_schema("OS image", "A storage volume holding an installed OS disk, used for the root disk of "
                              "new domains.", {
        "volume": p("string", "Image volume", "Name of the image's volume (e.g. debian-12.qcow2).", pattern=_OBJ_NAME),
        "pool": p("string", "Image pool", "Storage pool of the image volume. Empty: storage_pool.",
                  pattern=_OPT_OBJ_NAME),
        "mode": p("string", "Disk mode", "overlay: a qcow2 volume backed by the image (fast, the image must stay); "
                  "clone: a full copy of the image (virStorageVolCreateXMLFrom).", enum=["overlay", "clone"],
                  default="overlay"),
        "label": p("string", "Label", "Name shown to customers.", maxLength=100),
        "price_extra": sdk.money_prop("Surcharge", "Added to the monthly price for this OS (e.g. a licence)."),
    }, required=["volume"])  # fmt: skip
    region = sdk.region_schema(
        "A region customers may choose; prices are multiplied and/or raised in it.",
        price_multiplier=sdk.money_prop("Price multiplier", "The monthly price is multiplied by this (default 1)."),
        price_extra=sdk.money_prop("Surcharge", "Added to the monthly price after the multiplier."),
        network=p("string", "Network", "libvirt network of domains in this region (instead of the interface's "
                  "network).", pattern=_OPT_OBJ_NAME),
        bridge=p("string", "Bridge", "Host bridge of domains in this region (instead of the interface's "
                 "network/bridge).", pattern=_BRIDGE),
    )  # fmt: skip
    return {
        "type": "object",
        "title": "KVM (libvirt)",
        "description": "A KVM host reached through a libvirt connection URI.",
        "additionalProperties": False,
        "required": ["uri"],
        "properties": {
            "uri": p("string", "Connection URI", "libvirt URI of the host, e.g. qemu:///system (this machine), "
                     "qemu+ssh://root@host/system (SSH keys of the user running RustBill), qemu+tls://host/system, "
                     "or test:///default for libvirt's test driver.", pattern=r"^[a-z][a-z0-9+.-]*:[^\s]*$",
                     maxLength=1000, examples=["test:///default"]),
            "username": p("string", "Username", "User name for libvirt authentication (SASL, or the test driver's "
                          "<auth>), when the URI asks for one.", maxLength=200, default=""),
            "password": p("string", "Password", "Password for libvirt authentication, when the URI asks for one. "
                          "Secret.", format="password", maxLength=1000, default=""),
            "connect_timeout_seconds": p("number", "Connect timeout (s)", "How long to wait for the connection to "
                                         "open (libvirt has no timeout of its own). Keep it below the host's call "
                                         "timeouts.", minimum=0.1, maximum=300, default=10),
            "keepalive_interval_seconds": p("integer", "Keepalive interval (s)", "libvirt keepalive on daemon "
                                            "connections: a probe every N seconds of silence; 0 turns it off.",
                                            minimum=0, maximum=600, default=5),
            "keepalive_count": p("integer", "Keepalive count", "Unanswered probes after which the connection counts "
                                 "as dead (calls then fail instead of hanging).", minimum=1, maximum=100, default=3),
            "storage_pool": p("string", "Storage pool", "Pool of the root volumes of new domains.", pattern=_OBJ_NAME,
                              default="default"),
            "volume_format": p("string", "Volume format", "Format of blank and cloned root volumes (overlays are "
                               "always qcow2).", enum=["qcow2", "raw"], default="qcow2"),
            "network": p("string", "Network", "libvirt network the NIC is attached to (virsh net-list). Ignored when "
                         "bridge is set.", pattern=_OPT_OBJ_NAME, default="default"),
            "bridge": p("string", "Bridge", "A host bridge (e.g. br0) to attach the NIC to instead of a libvirt "
                        "network. Empty: use network.", pattern=_BRIDGE, default=""),
            "nic_model": p("string", "NIC model", "Guest NIC model.", enum=["virtio", "e1000", "rtl8139"],
                           default="virtio"),
            "domain_type": p("string", "Domain type", "kvm (hardware virtualisation), qemu (emulation, slow) or test "
                             "(only for libvirt's test driver).", enum=["kvm", "qemu", "test"], default="kvm"),
            "arch": p("string", "Architecture", "Guest architecture (e.g. x86_64, aarch64).",
                      pattern=r"^[a-z0-9_]{1,20}$", default="x86_64"),
            "machine": p("string", "Machine type", "Guest machine type (e.g. q35). Empty: the hypervisor's default.",
                         pattern=r"^[A-Za-z0-9_.-]{0,64}$", default=""),
            "cpu_mode": p("string", "CPU mode", "Guest CPU model: host-passthrough, host-model, or empty for the "
                          "hypervisor's default.", enum=["host-passthrough", "host-model", ""],
                          default="host-passthrough"),
            "vnc": p("boolean", "VNC console", "Add a VNC console listening on the host's 127.0.0.1.", default=True),
            "name_prefix": p("string", "Domain name prefix", "New domains are named prefix + the order's request id.",
                             pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,19}$", default="rb-"),
            **PRICING.images_properties(image, "OS name (the ServerSpec's os) → image volume. Empty: root disks are "
                                        "blank and orders must not name an OS.", default={}),
            "start_on_create": p("boolean", "Start on create", "Start new domains.", default=True),
            "autostart": p("boolean", "Autostart", "Mark new domains to start when the host boots.", default=True),
            "address_sources": p("array", "IP address sources", "Where a running domain's IP address is read from, "
                                 "in order: lease (libvirt network DHCP), arp (host ARP table), agent (QEMU guest "
                                 "agent).", items={"type": "string", "enum": ["lease", "arp", "agent"]},
                                 default=["lease", "arp"]),
            **PRICING.properties(region),
        },
    }  # fmt: skip


def _cfg(config: dict[str, Any], key: str) -> Any:
    return sdk.setting(config, DEFAULTS, key)


# ---------------------------------------------------------------- the connection (sdk.virt)

_NAME_LOCKS = [threading.Lock() for _ in range(64)]


def _uri(config: dict[str, Any]) -> str:
    uri = str(_cfg(config, "uri") or "").strip()
    if not uri:
        raise sdk.InvalidArgument("uri is required (e.g. qemu:///system or qemu+ssh://root@host/system)")
    if not re.match(r"^[a-z][a-z0-9+.-]*:\S*$", uri):
        raise sdk.InvalidArgument(f"uri {uri[:200]!r} is not a libvirt connection URI (driver[+transport]://...)")
    return uri


def _connect(config: dict[str, Any]) -> virt.Connection:
    """The interface's connection: cached per URI and credentials, opened (within the timeout, with
    keepalive) when there is none or it died."""
    virt.module()  # (first: without libvirt-python, that is what to say)
    return virt.connect(
        _uri(config),
        username=str(_cfg(config, "username") or ""),
        password=str(_cfg(config, "password") or ""),
        timeout=float(_cfg(config, "connect_timeout_seconds")),
        keepalive_interval=int(_cfg(config, "keepalive_interval_seconds")),
        keepalive_count=int(_cfg(config, "keepalive_count")),
    )


# ---------------------------------------------------------------- domains


def _domain_arg(value: Any, what: str = "name") -> str:
    name = str(value or "").strip()
    if not _NAME_RE.match(name):
        raise sdk.InvalidArgument(f"{what} {name[:80]!r} is not a valid libvirt domain name")
    return name


def _domain_name(config: dict[str, Any], request_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request_id).strip("-.").lower()
    name = sdk.order_name(str(_cfg(config, "name_prefix")), slug, request_id, max_length=64)
    return _domain_arg(name, "domain name")


def _order(config: dict[str, Any], request_id: str) -> tuple[str, str, virt.Connection, threading.Lock]:
    """The domain name and UUID of an order, the connection, and the lock that keeps this process's
    attempts of the same order apart."""
    name = _domain_name(config, request_id)
    dom_uuid = str(uuid.uuid5(_UUID_NS, request_id))
    entry = _connect(config)
    lock = _NAME_LOCKS[int(hashlib.sha256(f"{entry.key}/{name}".encode()).hexdigest(), 16) % len(_NAME_LOCKS)]
    return name, dom_uuid, entry, lock


def _lookup(entry: virt.Connection, name: str) -> Any:
    with virt.calls(entry, f"domain {name!r}"):
        dom = virt.or_none("NO_DOMAIN", entry.conn.lookupByName, name)
    if dom is None:
        raise sdk.NotFound(f"domain {name!r} does not exist at {entry.where}")
    return dom


def _meta(dom: Any) -> dict[str, str]:
    """The RustBill metadata of a domain ({} for domains made elsewhere)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0)
    except libvirt.libvirtError as exc:
        if virt.is_error(exc, "NO_DOMAIN_METADATA", "NO_SUPPORT", "INVALID_ARG"):
            return {}
        raise
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return {}
    out: dict[str, str] = {}
    for child in root:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "volume":
            out.setdefault("volumes", "")
            out["volumes"] += f"{child.get('pool', '')}/{child.get('name', '')}\n"
        else:
            out[tag] = (child.text or "").strip()
    return out


def _status(state: int) -> str:
    return STATUS.get(int(state), "unknown")


def _ip(dom: Any, config: dict[str, Any]) -> str:
    """The first IPv4 address of a running domain (else IPv6), from the configured sources; "" if none."""
    sources = _cfg(config, "address_sources") or []
    for source in sources:
        src = _ADDRESS_SOURCES.get(str(source))
        if src is None:
            continue
        try:
            ifaces = dom.interfaceAddresses(src, 0) or {}
        except libvirt.libvirtError:
            continue  # not running, source not supported, agent absent ...
        addrs = [a for i in ifaces.values() for a in (i.get("addrs") or []) if a.get("addr")]
        for family in (0, 1):  # VIR_IP_ADDR_TYPE_IPV4, _IPV6
            for a in addrs:
                addr = str(a["addr"])
                if a.get("type") == family and not addr.startswith(("127.", "::1", "fe80:")):
                    return addr
    return ""


def _summary(
    entry: virt.Connection, dom: Any, config: dict[str, Any], *, full: bool = False, uncertain: bool = False
) -> dict[str, Any]:
    name = dom.name()
    with virt.calls(entry, f"domain {name!r}", uncertain=uncertain):
        state, max_kib, _cur_kib, vcpus, _cpu_time = dom.info()
        meta = _meta(dom)
        status = _status(state)
        out: dict[str, Any] = {
            "name": name,
            "uuid": dom.UUIDString(),
            "status": status,
            "state": int(state),
            "vcpus": int(vcpus),
            "memory_mib": int(max_kib) // 1024,
            "ip_address": _ip(dom, config) if status in ("running", "paused") else "",
            "created_at": meta.get("created_at", ""),
            "request_id": meta.get("request_id", ""),
        }
        if full:
            out["persistent"] = bool(dom.isPersistent())
            try:
                out["autostart"] = bool(dom.autostart())
            except Exception:
                out["autostart"] = False
    return out


def _instance(summary: dict[str, Any]) -> dict[str, str]:
    return sdk.instance_result(summary["name"], summary["status"], summary["ip_address"], summary["created_at"])


def _list(entry: virt.Connection, config: dict[str, Any], *, full: bool = False) -> list[dict[str, Any]]:
    with virt.calls(entry, f"listing domains at {entry.where}"):
        doms = entry.conn.listAllDomains(0)
    out = []
    for dom in doms:
        try:
            out.append(_summary(entry, dom, config, full=full))
        except sdk.NotFound:
            continue  # undefined meanwhile
    return sorted(out, key=lambda s: s["name"])


# ---------------------------------------------------------------- provider contract: catalogue
# Prices, plans and the spec template come from the config alone (sdk.ServerPricing), without libvirt.
spec_template = PRICING.spec_template  # spec_template(config)
query_price = PRICING.quote  # query_price(config, spec)
sync_products = PRICING.products  # sync_products(config)


def get_upstream_balance(config):
    raise sdk.PluginError(
        "kvm is a first-party provider (your own libvirt hosts): there is no upstream balance", "UNIMPLEMENTED"
    )


# ---------------------------------------------------------------- provider contract: instances


def _text(parent: ET.Element, tag: str, text: Any, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = str(text)
    return el


def _vol_format(vol: Any, fallback: str) -> str:
    try:
        fmt = ET.fromstring(vol.XMLDesc(0)).find("./target/format")
    except ET.ParseError:
        fmt = None
    value = fmt.get("type") if fmt is not None else None
    return value if value in ("raw", "qcow2", "qed", "vmdk", "vdi", "vpc", "iso") else fallback


def _vol_xml(name: str, capacity: int, fmt: str, backing: tuple[str, str] | None = None) -> str:
    """A volume (https://libvirt.org/formatstorage.html), backed by ``backing`` (path, format) if given."""
    e = html.escape
    back = (
        f'<backingStore><path>{e(backing[0])}</path><format type="{e(backing[1])}"/></backingStore>' if backing else ""
    )
    return (
        f'<volume><name>{e(name)}</name><capacity unit="bytes">{capacity}</capacity><allocation unit="bytes">0'
        f'</allocation><target><format type="{e(fmt)}"/></target>{back}</volume>'
    )


def _pool(entry: virt.Connection, name: str) -> Any:
    with virt.calls(entry, f"storage pool {name!r}"):
        pool = virt.or_none("NO_STORAGE_POOL", entry.conn.storagePoolLookupByName, name)
        if pool is None:
            raise sdk.FailedPrecondition(
                f"storage pool {name!r} does not exist at {entry.where} (check storage_pool and images)"
            )
        if not pool.isActive():
            raise sdk.FailedPrecondition(f"storage pool {name!r} at {entry.where} is not active (virsh pool-start)")
    return pool


def _vol_or_none(pool: Any, name: str) -> Any:
    return virt.or_none("NO_STORAGE_VOL", pool.storageVolLookupByName, name)


def _root_volume(
    entry: virt.Connection, config: dict[str, Any], spec: dict[str, Any], name: str
) -> tuple[Any, tuple[str, str, str]]:
    """The root volume of the domain ``name`` (made now, or found from an earlier attempt) and its
    (pool, name, format)."""
    pool_name = str(_cfg(config, "storage_pool"))
    image = PRICING.images(config).get(spec["os"]) if spec["os"] else None
    mode = str((image or {}).get("mode") or "overlay")
    fmt = "qcow2" if image and mode == "overlay" else str(_cfg(config, "volume_format"))
    vol_name = f"{name}.{'qcow2' if fmt == 'qcow2' else 'img'}"
    capacity = spec["disk_gb"] * _GIB
    pool = _pool(entry, pool_name)
    what = f"creating volume {vol_name!r} in pool {pool_name!r}"
    with virt.calls(entry, what):
        found = _vol_or_none(pool, vol_name)
        if found is not None:
            return found, (pool_name, vol_name, _vol_format(found, fmt))  # a retry: it exists already
        base = None
        if image:
            base_pool_name = str(image.get("pool") or pool_name)
            base_pool = pool if base_pool_name == pool_name else _pool(entry, base_pool_name)
            base = _vol_or_none(base_pool, str(image["volume"]))
            if base is None:
                raise sdk.FailedPrecondition(
                    f"image volume {image['volume']!r} of os {spec['os']!r} does not exist in pool "
                    f"{base_pool_name!r} at {entry.where}"
                )
            base_capacity = int(base.info()[1])
            if base_capacity > capacity:
                raise sdk.InvalidArgument(
                    f"disk_gb {spec['disk_gb']} is smaller than the {spec['os']} image "
                    f"({math.ceil(base_capacity / _GIB)} GiB)"
                )
    with virt.calls(entry, what, uncertain=True):
        try:
            if base is None:
                vol = pool.createXML(_vol_xml(vol_name, capacity, fmt), 0)
            elif mode == "overlay":
                backing = (base.path(), _vol_format(base, "qcow2"))
                vol = pool.createXML(_vol_xml(vol_name, capacity, "qcow2", backing), 0)
            else:
                vol = pool.createXMLFrom(_vol_xml(vol_name, capacity, fmt), base, 0)
        except libvirt.libvirtError as exc:
            if entry.alive:
                again = _vol_or_none(pool, vol_name)
                if again is not None:  # a concurrent attempt of the same order made it
                    return again, (pool_name, vol_name, _vol_format(again, fmt))
                low = (exc.get_error_message() or "").lower()
                if "space" in low:
                    available = int(pool.info()[3])
                    raise sdk.PluginError(
                        f"{what}: storage pool {pool_name!r} has not enough free space for {spec['disk_gb']} GiB "
                        f"({available / _GIB:.1f} GiB available): {exc.get_error_message()}",
                        "RESOURCE_EXHAUSTED",
                    ) from None
            raise
        if int(vol.info()[1]) < capacity:  # a clone that kept the image's size: grow it to disk_gb
            try:
                vol.resize(capacity, 0)
            except libvirt.libvirtError as exc:
                if not virt.is_error(exc, *virt.UNSUPPORTED):
                    if entry.alive:
                        vol.delete(0)  # a definite failure: the order's volume goes again
                    raise
        ref = (pool_name, vol_name, _vol_format(vol, fmt))
    return vol, ref


def _domain_xml(
    config: dict[str, Any],
    spec: dict[str, Any],
    name: str,
    dom_uuid: str,
    request_id: str,
    vol: tuple[str, str, str] | None,
    created_at: str,
) -> str:
    root = ET.Element("domain", {"type": str(_cfg(config, "domain_type"))})
    _text(root, "name", name)
    _text(root, "uuid", dom_uuid)
    _text(root, "description", f"RustBill order {request_id}")
    meta = ET.SubElement(ET.SubElement(root, "metadata"), f"{{{META_NS}}}instance")
    for key in ("request_id", "os", "region", "created_at", "disk_gb", "bandwidth_mbps"):
        value = {"request_id": request_id, "created_at": created_at}.get(key, spec.get(key, ""))
        _text(meta, f"{{{META_NS}}}{key}", value)
    if vol is not None:
        ET.SubElement(meta, f"{{{META_NS}}}volume", {"pool": vol[0], "name": vol[1]})
    _text(root, "memory", spec["memory_gb"], unit="GiB")
    _text(root, "currentMemory", spec["memory_gb"], unit="GiB")
    _text(root, "vcpu", spec["cpu_cores"], placement="static")
    os_el = ET.SubElement(root, "os")
    type_attrs = {"arch": str(_cfg(config, "arch"))}
    if _cfg(config, "machine"):
        type_attrs["machine"] = str(_cfg(config, "machine"))
    _text(os_el, "type", "hvm", **type_attrs)
    ET.SubElement(os_el, "boot", {"dev": "hd"})
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if _cfg(config, "cpu_mode"):
        ET.SubElement(root, "cpu", {"mode": str(_cfg(config, "cpu_mode"))})
    ET.SubElement(root, "clock", {"offset": "utc"})
    _text(root, "on_poweroff", "destroy")
    _text(root, "on_reboot", "restart")
    _text(root, "on_crash", "destroy")
    devices = ET.SubElement(root, "devices")
    if vol is not None:
        disk = ET.SubElement(devices, "disk", {"type": "volume", "device": "disk"})
        ET.SubElement(disk, "driver", {"name": "qemu", "type": vol[2]})
        ET.SubElement(disk, "source", {"pool": vol[0], "volume": vol[1]})
        ET.SubElement(disk, "target", {"dev": "vda", "bus": "virtio"})
    region = PRICING.regions(config).get(spec["region"]) or {}
    bridge = str(region.get("bridge") or ("" if region.get("network") else _cfg(config, "bridge")) or "")
    network = str(region.get("network") or _cfg(config, "network") or "")
    if bridge or network:
        iface = ET.SubElement(devices, "interface", {"type": "bridge" if bridge else "network"})
        ET.SubElement(iface, "source", {"bridge": bridge} if bridge else {"network": network})
        ET.SubElement(iface, "model", {"type": str(_cfg(config, "nic_model"))})
        if spec["bandwidth_mbps"] > 0:
            # libvirt <bandwidth> average is in kilobytes per second: 1 Mbit/s = 125 kB/s
            kbytes = str(spec["bandwidth_mbps"] * 125)
            bw = ET.SubElement(iface, "bandwidth")
            ET.SubElement(bw, "inbound", {"average": kbytes})
            ET.SubElement(bw, "outbound", {"average": kbytes})
    serial = ET.SubElement(devices, "serial", {"type": "pty"})
    ET.SubElement(serial, "target", {"port": "0"})
    console = ET.SubElement(devices, "console", {"type": "pty"})
    ET.SubElement(console, "target", {"type": "serial", "port": "0"})
    channel = ET.SubElement(devices, "channel", {"type": "unix"})
    ET.SubElement(channel, "target", {"type": "virtio", "name": "org.qemu.guest_agent.0"})
    if _cfg(config, "vnc"):
        ET.SubElement(devices, "graphics", {"type": "vnc", "autoport": "yes", "listen": "127.0.0.1"})
    ET.SubElement(devices, "memballoon", {"model": "virtio"})
    return ET.tostring(root, encoding="unicode")


def _find_order(entry: virt.Connection, name: str, dom_uuid: str, request_id: str) -> Any:
    """The domain an earlier attempt of this order made (by name, else by UUID), or None. A domain of
    that name made for anything else is refused."""
    with virt.calls(entry, f"looking up domain {name!r}"):
        dom = virt.or_none("NO_DOMAIN", entry.conn.lookupByName, name)
        if dom is None:
            dom = virt.or_none("NO_DOMAIN", entry.conn.lookupByUUIDString, dom_uuid)
        if dom is None:
            return None
        owner = _meta(dom).get("request_id", "")
    if owner != request_id:
        raise sdk.AlreadyExists(
            f"domain {dom.name()!r} already exists at {entry.where} for something else "
            f"(request {owner or 'none: not made by RustBill'})"
        )
    return dom


def _undefine(dom: Any) -> None:
    for flags in _UNDEFINE_FLAGS:
        try:
            dom.undefineFlags(flags) if flags else dom.undefine()
            return
        except libvirt.libvirtError as exc:
            if virt.is_error(exc, "INVALID_ARG", "NO_SUPPORT") and flags:
                continue  # flags this driver does not know: fewer
            raise


def _remove_made(entry: virt.Connection, dom: Any, vol: Any, name: str) -> None:
    """Remove what a failed create made (best effort; logged)."""
    try:
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                _undefine(dom)
        if vol is not None:
            vol.delete(0)
        log.info("create_instance: removed the half-made domain %s at %s", name, entry.uri)
    except Exception as exc:
        log.error("create_instance: could not remove the half-made domain %s at %s: %s", name, entry.uri, exc)


def create_instance(config, spec):
    request_id = sdk.order_request_id(spec)
    spec = PRICING.check_spec(config, spec)
    name, dom_uuid, entry, lock = _order(config, request_id)
    with lock:
        dom = _find_order(entry, name, dom_uuid, request_id)
        made_dom = made_vol = None
        if dom is not None:
            log.info("create_instance: domain %s already exists for request %s; returning it", dom.name(), request_id)
        else:
            # the volume is this order's (its name comes from the request id), made now or by an earlier
            # attempt that ended before the domain was defined: a definite failure below removes it
            made_vol, vol_ref = _root_volume(entry, config, spec, name)
            created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            xml = _domain_xml(config, spec, name, dom_uuid, request_id, vol_ref, created_at)
            try:
                with virt.calls(entry, f"defining domain {name!r}", uncertain=True):
                    try:
                        dom = entry.conn.defineXML(xml)
                    except libvirt.libvirtError as exc:
                        if not virt.is_error(exc, "OPERATION_FAILED", "DOM_EXIST") or not entry.alive:
                            raise
                        dom = _find_order(entry, name, dom_uuid, request_id)  # a concurrent attempt won
                        if dom is None:
                            raise
                    else:
                        made_dom = dom
                    if _cfg(config, "autostart"):
                        virt.or_none(virt.UNSUPPORTED, dom.setAutostart, 1)
            except sdk.PluginError as exc:
                if exc.code != "DEADLINE_EXCEEDED":  # a definite failure: nothing half-made stays
                    _remove_made(entry, made_dom, made_vol, name)
                raise
        if _cfg(config, "start_on_create"):
            try:
                with virt.calls(entry, f"starting domain {dom.name()!r}", uncertain=True):
                    if not dom.isActive():
                        try:
                            dom.create()
                        except libvirt.libvirtError:
                            if not (entry.alive and dom.isActive()):  # else: started meanwhile
                                raise
            except sdk.PluginError as exc:
                if exc.code != "DEADLINE_EXCEEDED" and made_dom is not None:
                    _remove_made(entry, made_dom, made_vol, name)
                    raise sdk.PluginError(f"{exc.message}; the domain and its volume were removed", exc.code) from None
                raise
        summary = _summary(entry, dom, config, uncertain=True)  # made: a lost connection now is no failure
    log.info("create_instance: domain %s is %s at %s (request %s)", name, summary["status"], entry.uri, request_id)
    return _instance(summary)


def _remove_leftover_volume(entry: virt.Connection, config: dict[str, Any], name: str) -> None:
    """An attempt that died after making the order's root volume but before defining the domain left
    the volume behind; the order is given up, so the volume goes (best effort; logged)."""
    pool_name = str(_cfg(config, "storage_pool"))
    try:
        pool = entry.conn.storagePoolLookupByName(pool_name)
        for vol_name in (f"{name}.qcow2", f"{name}.img"):
            vol = _vol_or_none(pool, vol_name)
            if vol is not None:
                vol.delete(0)
                log.info("find_instance: removed volume %s left by an unfinished order at %s", vol_name, entry.uri)
    except Exception as exc:
        log.warning("find_instance: could not check for a volume left by order %s at %s: %s", name, entry.uri, exc)


def find_instance(config, request_id):
    """The domain an order (``request_id``) made — by name, else by UUID, with the request id in its
    metadata — or None when there is none (a root volume it left behind without a domain is removed)."""
    request_id = sdk.find_request_id(request_id)
    name, dom_uuid, entry, lock = _order(config, request_id)
    with lock:
        with virt.calls(entry, f"looking up the domain of order {request_id!r}"):
            by_name = virt.or_none("NO_DOMAIN", entry.conn.lookupByName, name)
            dom = by_name if by_name is not None and _meta(by_name).get("request_id", "") == request_id else None
            if dom is None:
                by_uuid = virt.or_none("NO_DOMAIN", entry.conn.lookupByUUIDString, dom_uuid)  # renamed since
                if by_uuid is not None and _meta(by_uuid).get("request_id", "") == request_id:
                    dom = by_uuid
        if dom is None:
            if by_name is None:  # (a domain of that name made for something else keeps its volumes)
                _remove_leftover_volume(entry, config, name)
            return None
        summary = _summary(entry, dom, config)
    log.info("find_instance: order %s has domain %s (%s) at %s", request_id, summary["name"], summary["status"],
             entry.uri)  # fmt: skip
    return _instance(summary)


def get_instance_status(config, instance_id):
    name = _domain_arg(instance_id, "instance_id")
    entry = _connect(config)
    return _instance(_summary(entry, _lookup(entry, name), config))


def sync_upstream_instances(config):
    entry = _connect(config)
    return [_instance(s) for s in _list(entry, config)]


# ---------------------------------------------------------------- health


def _problems(entry: virt.Connection, config: dict[str, Any]) -> list[str]:
    """What in the interface's configuration the host does not have."""
    problems: list[str] = []
    pool_names = [str(_cfg(config, "storage_pool"))] + [
        str(i.get("pool")) for i in PRICING.images(config).values() if isinstance(i, dict) and i.get("pool")
    ]
    pools = virt.active(entry, "storage pool", pool_names, problems)
    for os_name, image in PRICING.images(config).items():
        pool = pools.get(str(image.get("pool") or _cfg(config, "storage_pool")))
        if pool is None:
            continue
        with virt.calls(entry, f"image of os {os_name!r}"):
            if _vol_or_none(pool, str(image.get("volume"))) is None:
                problems.append(
                    f"image volume {image.get('volume')!r} of os {os_name!r} does not exist in pool {pool.name()!r}"
                )
    networks = [str(_cfg(config, "network"))] if _cfg(config, "network") and not _cfg(config, "bridge") else []
    networks += [
        str(r["network"]) for r in PRICING.regions(config).values() if isinstance(r, dict) and r.get("network")
    ]
    virt.active(entry, "network", networks, problems)
    arch, dtype = str(_cfg(config, "arch")), str(_cfg(config, "domain_type"))
    offered = virt.guest_types(entry)
    if (arch, dtype) not in offered:
        kinds = ", ".join(f"{t}/{a}" for a, t in dict.fromkeys(offered)) or "none"
        problems.append(
            f"the host cannot run {dtype} guests for {arch} (it offers: {kinds}); check domain_type and arch"
            + (" — is /dev/kvm available?" if dtype == "kvm" else "")
        )
    return problems


def health_check(config):
    entry = _connect(config)
    info = virt.host_info(entry)
    problems = _problems(entry, config)
    what = f"{entry.where} ({info['driver']} {info['hypervisor_version']}, libvirt {info['libvirt_version']})"
    if problems:
        return f"{what}: " + "; ".join(problems)
    log.info("health_check: %s on host %s is healthy", what, info["hostname"] or "?")
    return {"healthy": True, **info}


# ---------------------------------------------------------------- admin page and actions


def _attr(el: ET.Element, path: str, name: str) -> str:
    """Attribute ``name`` of the element at ``path`` under ``el`` ("" when either is missing)."""
    found = el.find(path)
    return "" if found is None else found.get(name, "")


def _details(entry: virt.Connection, dom: Any, config: dict[str, Any]) -> dict[str, Any]:
    out = _summary(entry, dom, config, full=True)
    with virt.calls(entry, f"domain {out['name']!r}"):
        root = ET.fromstring(dom.XMLDesc(0))
        meta = _meta(dom)
    disks = [
        {
            "device": _attr(disk, ".", "device"),
            "target": _attr(disk, "target", "dev"),
            "pool": _attr(disk, "source", "pool"),
            "volume": _attr(disk, "source", "volume"),
            "file": _attr(disk, "source", "file") or _attr(disk, "source", "dev"),
        }
        for disk in root.findall("./devices/disk")
    ]
    nics = [
        {
            "type": _attr(nic, ".", "type"),
            "network": _attr(nic, "source", "network"),
            "bridge": _attr(nic, "source", "bridge"),
            "mac": _attr(nic, "mac", "address"),
            "inbound_kbytes_per_s": _attr(nic, "bandwidth/inbound", "average"),
        }
        for nic in root.findall("./devices/interface")
    ]
    out.update(
        domain_type=root.get("type", ""),
        disks=disks,
        interfaces=nics,
        os=meta.get("os", ""),
        region=meta.get("region", ""),
        volumes=[v for v in meta.get("volumes", "").split("\n") if v],
    )
    return out


def admin_server_info(config):
    """The host and its versions (as in the health result)."""
    entry = _connect(config)
    return virt.host_info(entry)


def admin_list_domains(config):
    """Every domain, as on the page."""
    entry = _connect(config)
    return _list(entry, config, full=True)


def admin_domain(config):
    """One domain in detail: ``{"name": ...}``."""
    name = sdk.action_target(config, _domain_arg)
    entry = _connect(config)
    return _details(entry, _lookup(entry, name), config)


def admin_list_volumes(config):
    """Volumes of a pool: ``{"pool": ...}`` (default: storage_pool)."""
    pool_name = str(config.get("pool") or _cfg(config, "storage_pool"))
    entry = _connect(config)
    pool = _pool(entry, pool_name)
    out = []
    with virt.calls(entry, f"volumes of pool {pool_name!r}"):
        for vol in pool.listAllVolumes(0):
            _kind, capacity, allocation = vol.info()
            out.append(
                {
                    "name": vol.name(),
                    "path": vol.path(),
                    "capacity_bytes": int(capacity),
                    "allocation_bytes": int(allocation),
                    "format": _vol_format(vol, ""),
                }
            )
    return sorted(out, key=lambda v: v["name"])


def _act(
    config: dict[str, Any], action: str, fn: Callable[[Any, virt.Connection], dict[str, Any] | None]
) -> dict[str, Any]:
    name = sdk.action_target(config, _domain_arg)
    entry = _connect(config)
    dom = _lookup(entry, name)
    with virt.calls(entry, f"{action} of domain {name!r}"):
        extra = fn(dom, entry) or {}
    summary = _summary(entry, dom, config) if action != "delete" else {"status": "deleted", "ip_address": ""}
    log.info("admin %s of domain %s at %s", action, name, entry.uri)
    return {"name": name, "action": action, "status": summary["status"], "ip_address": summary["ip_address"], **extra}


def _state(dom: Any) -> str:
    return _status(dom.state()[0])


def admin_start(config):
    """Start (boot) a defined domain: ``{"name": ...}``."""

    def go(dom: Any, entry: virt.Connection) -> None:
        if dom.isActive():
            raise sdk.FailedPrecondition(f"domain {dom.name()!r} is already {_state(dom)}")
        dom.create()

    return _act(config, "start", go)


def admin_stop(config):
    """Graceful shutdown (ACPI): ``{"name": ..., "timeout": 20, "force": false}``; waits up to ``timeout``
    seconds for the guest to power off, then with ``force`` powers it off."""
    try:
        wait = min(max(float(config.get("timeout", 20)), 0.0), 300.0)
    except (TypeError, ValueError):
        raise sdk.InvalidArgument("timeout must be a number of seconds") from None
    force = bool(config.get("force", False))

    def go(dom: Any, entry: virt.Connection) -> dict[str, Any] | None:
        if not dom.isActive():
            raise sdk.FailedPrecondition(f"domain {dom.name()!r} is not running (it is {_state(dom)})")
        dom.shutdown()
        deadline = time.monotonic() + wait
        while dom.isActive() and time.monotonic() < deadline:
            time.sleep(0.25)
        if not dom.isActive():
            return None
        if force:
            dom.destroy()
            return {"forced": True}
        return {
            "note": f"shutdown requested; the guest has not powered off within {wait:g}s (force: true powers it off)"
        }

    return _act(config, "stop", go)


def admin_destroy(config):
    """Power off at once (like pulling the plug): ``{"name": ...}``."""
    return _act(config, "destroy", lambda dom, _entry: dom.destroy())


def admin_reboot(config):
    """Ask the guest to reboot: ``{"name": ...}``."""
    return _act(config, "reboot", lambda dom, _entry: dom.reboot(0))


def admin_suspend(config):
    """Pause the domain's vCPUs: ``{"name": ...}``."""
    return _act(config, "suspend", lambda dom, _entry: dom.suspend())


def admin_resume(config):
    """Resume a paused domain: ``{"name": ...}``."""
    return _act(config, "resume", lambda dom, _entry: dom.resume())


def admin_delete(config):
    """Undefine a domain: ``{"name": ..., "force": false, "delete_volumes": true}``. A running domain is
    refused unless ``force`` (then powered off first). ``delete_volumes`` removes the volumes this plugin
    made for it (recorded in its metadata); other disks are never touched."""
    force = bool(config.get("force", False))
    delete_volumes = bool(config.get("delete_volumes", True))

    def go(dom: Any, entry: virt.Connection) -> dict[str, Any]:
        meta = _meta(dom)
        if dom.isActive():
            if not force:
                raise sdk.FailedPrecondition(
                    f'domain {dom.name()!r} is {_state(dom)}; stop it first or pass "force": true'
                )
            dom.destroy()
        try:
            if dom.isPersistent():
                _undefine(dom)
        except libvirt.libvirtError as exc:
            if not virt.is_error(exc, "NO_DOMAIN"):  # a transient domain vanishes when destroyed
                raise
        deleted = []
        if delete_volumes:
            for ref in [v for v in meta.get("volumes", "").split("\n") if v]:
                pool_name, _, vol_name = ref.partition("/")
                pool = virt.or_none("NO_STORAGE_POOL", entry.conn.storagePoolLookupByName, pool_name)
                vol = _vol_or_none(pool, vol_name) if pool is not None else None
                if vol is not None:
                    vol.delete(0)
                    deleted.append(ref)
        return {"deleted_volumes": deleted}

    return _act(config, "delete", go)


# Buttons per domain state: (action, label). Force off and delete are in the form below the table,
# which asks for the domain's name.
_ROW_ACTIONS = {
    "running": (("admin_stop", "Shut down"), ("admin_reboot", "Reboot"), ("admin_suspend", "Pause")),
    "paused": (("admin_resume", "Resume"),),
    "stopped": (("admin_start", "Start"),),
    "crashed": (("admin_start", "Start"),),
}
_DANGER_FORM = sdk.action_form(
    "danger",
    "Force off or delete a domain",
    "domain",
    "Domain name (type it to confirm)",
    (
        ("admin_destroy", "Force off (like pulling the plug)", {}),
        ("admin_delete", "Delete, with its volumes", {"delete_volumes": True}),
        ("admin_delete", "Delete, keep its volumes", {"delete_volumes": False}),
    ),
    flags=[("force", "even if running")],
)
# Row buttons run their action on their domain, the form its action once the name is typed in.
_PAGE_SCRIPT = f"<script>\n{sdk.ITEM_LIST_JS}{sdk.ACTION_FORM_JS}</script>"


def admin_page(config):
    e = html.escape
    try:
        entry = _connect(config)
        server = virt.host_info(entry)
        domains = _list(entry, config, full=True)
    except sdk.PluginError as exc:
        parts = [sdk.unreachable("libvirt", exc.message)]
    else:
        headers = ("Name", "State", "vCPUs", "Memory", "IP address", "Autostart", "Persistent", "Created",
                   "RustBill request")  # fmt: skip
        table = sdk.item_list(headers, domains, lambda d: (
            d["name"], d["status"], d["vcpus"], f"{d['memory_mib']} MiB", d["ip_address"],
            "yes" if d.get("autostart") else "no", "yes" if d.get("persistent") else "no", d["created_at"],
            d["request_id"],
        ), _ROW_ACTIONS, "domain")  # fmt: skip
        parts = [
            f"<p>{e(server['driver'])} {e(server['hypervisor_version'])} on {e(server['hostname'] or '?')} "
            f"({e(server['host_arch'])}, {server['host_cpus']} CPUs, {server['host_memory_mib']} MiB), libvirt "
            f"{e(server['libvirt_version'])} (client {e(server['client_libvirt_version'])})</p>",
            table + _DANGER_FORM,
        ]
    parts.append(sdk.actions_note(globals()))  # every admin_* below, with its docstring
    page = sdk.admin_html("KVM", f"KVM — {_cfg(config, 'uri')}", parts, sdk.admin_bridge_script() + _PAGE_SCRIPT)
    return {"title": "KVM (libvirt)", "html": page}
