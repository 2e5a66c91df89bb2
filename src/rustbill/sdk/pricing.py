"""Selling servers by price rules: the part of a first-party provider that needs no host.

A provider whose customers choose vCPUs, memory, disk, bandwidth, a region and an OS (the built-in
``kvm`` and ``incus``) prices every choice from rules in its configuration, offers fixed plans through
SyncProducts and refuses specs outside its limits. That logic is the same whatever the host is, so it
lives here, and a plugin keeps only what is its own: the connection, the create path and the schema of
its regions and images. ``ServerPricing`` holds the rules' defaults; its methods are what the contract
functions ``query_price``, ``sync_products`` and ``spec_template`` return, and ``check_spec`` is the
check ``create_instance`` runs before it makes anything. The schema helpers build the matching part of
``config_schema()``, so that what the admin may enter and what the plugin reads stay one definition.

Money is ``Decimal`` from decimal strings (floats are refused: they lose cents); amounts are rounded to
cents, half up, once per billing cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from . import FailedPrecondition, InvalidArgument, PluginError

DECIMAL_PATTERN = r"^\d{1,12}(\.\d{1,8})?$"
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"
_CYCLE_PATTERN = r"^[a-z_]{1,32}$"
_CENT = Decimal("0.01")

# The configuration keys ServerPricing reads and their defaults; a plugin merges them into its own
# DEFAULTS (which also name its "images" and "default_os").
PRICING_DEFAULTS: dict[str, Any] = {
    "currency": "CNY",
    "billing_cycle": "monthly",
    "billing_cycles": {"monthly": "1"},
    "price_base": "0",
    "price_per_core": "10.00",
    "price_per_gb_memory": "5.00",
    "price_per_gb_disk": "0.20",
    "price_per_mbps": "0",
    "regions": {},
    "plans": [],
    "max_cpu_cores": 32,
    "max_memory_gb": 128,
    "min_disk_gb": 5,
    "max_disk_gb": 2000,
    "max_bandwidth_mbps": 1000,
}

# ---------------------------------------------------------------- schema pieces


def prop(type_: Any, title: str, description: str, **extra: Any) -> dict[str, Any]:
    """One described property of a JSON Schema (the console shows title and description)."""
    return {"type": type_, "title": title, "description": description, **extra}


def money_prop(title: str, description: str, default: str | None = None) -> dict[str, Any]:
    """A non-negative decimal string property; money never travels as a JSON number."""
    extra = {} if default is None else {"default": default}
    return prop("string", title, description + " Decimal string.", pattern=DECIMAL_PATTERN, **extra)


def object_schema(title: str, description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A closed object (no other keys), such as one region, image or plan."""
    return {
        "type": "object",
        "title": title,
        "description": description,
        "additionalProperties": False,
        **extra,
        "properties": properties,
    }


def map_prop(
    title: str, description: str, values: dict[str, Any], *, names: str = NAME_PATTERN, **extra: Any
) -> dict[str, Any]:
    """An object used as a map from a name (the key, matching ``names``) to a ``values`` schema."""
    return {
        "type": "object",
        "title": title,
        "description": description,
        "propertyNames": {"pattern": names},
        "additionalProperties": values,
        **extra,
    }


def region_schema(description: str, **properties: Any) -> dict[str, Any]:
    """One region: a label customers see, then the plugin's own keys (``price_extra``,
    ``price_multiplier`` and whatever places an instance there)."""
    label = prop("string", "Label", "Name shown to customers.", maxLength=100)
    return object_schema("Region", description, {"label": label, **properties})


# ---------------------------------------------------------------- values


def setting(config: Mapping[str, Any], defaults: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or its default when the admin left it out (or null)."""
    value = config.get(key)
    return defaults[key] if value is None else value


def non_negative_decimal(key: str, raw: Any) -> Decimal:
    """A configured price or multiplier as a Decimal; ``key`` names it in the error."""
    if isinstance(raw, float):
        raise InvalidArgument(f"{key} must be a decimal string, not a float")
    try:
        d = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidArgument(f"{key} is not a decimal number: {raw!r}") from None
    if not d.is_finite() or d < 0:
        raise InvalidArgument(f"{key} must be a non-negative number")
    return d


def spec_int(spec: Mapping[str, Any], key: str) -> int:
    """An integer of a spec (absent or null: 0); booleans and floats are refused, digit strings read."""
    v = spec.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or isinstance(v, float) or not isinstance(v, (int, str)):
        raise InvalidArgument(f"{key} must be an integer")
    try:
        return int(v)
    except ValueError:
        raise InvalidArgument(f"{key} must be an integer") from None


def cycle_amount(monthly: Decimal, multiplier: Decimal) -> Decimal:
    """The price of one billing cycle: the monthly price times the cycle's multiplier, in cents."""
    return (monthly * multiplier).quantize(_CENT, rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------- the price rules


_SPEC_INTS = ("cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps")


class ServerPricing:
    """The price rules, plans, regions, OS images and limits of a provider that sells servers.

    ``defaults`` is the plugin's DEFAULTS (with PRICING_DEFAULTS, ``images`` and ``default_os``):
    an empty ``images`` in the config falls back to ``defaults["images"]``, and when that is empty
    too the provider has no OS choice (blank disks) and refuses orders naming one. The words name
    what the plugin sells in the schema and the spec template: ``unit`` ("domain", "instance"),
    ``cpu`` ("vCPU", "CPU core") and ``disk`` ("root volume", "root disk").
    """

    def __init__(self, defaults: Mapping[str, Any], *, unit: str, cpu: str, disk: str) -> None:
        missing = [k for k in (*PRICING_DEFAULTS, "images", "default_os") if k not in defaults]
        if missing:
            raise ValueError(f"defaults lack {', '.join(missing)}")
        self.defaults = defaults
        self.unit, self.cpu, self.disk = unit, cpu, disk

    def setting(self, config: Mapping[str, Any], key: str) -> Any:
        return setting(config, self.defaults, key)

    def regions(self, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        regions = self.setting(config, "regions")
        return regions if isinstance(regions, dict) else {}

    def images(self, config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        images = self.setting(config, "images")
        return images if isinstance(images, dict) and images else dict(self.defaults["images"])

    def default_os(self, config: Mapping[str, Any]) -> str:
        """The OS of an order that names none: ``default_os``, else the first image, else none."""
        images = self.images(config)
        return str(self.setting(config, "default_os") or "") or (next(iter(images)) if images else "")

    def check_spec(self, config: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's numbers within this provider's limits, its region and OS known; normalised
        (integers, the default OS filled in)."""
        if not isinstance(spec, Mapping):
            raise InvalidArgument("spec must be an object")
        out: dict[str, Any] = {key: spec_int(spec, key) for key in _SPEC_INTS}
        out["region"] = str(spec.get("region") or "")
        out["os"] = str(spec.get("os") or "") or self.default_os(config)
        for key, (lo, hi) in self._bounds(config).items():
            if not lo <= out[key] <= hi:
                raise InvalidArgument(f"{key} must be between {lo} and {hi}, got {out[key]}")
        regions = self.regions(config)
        if regions:
            if out["region"] not in regions:
                raise InvalidArgument(f"region must be one of {', '.join(regions)}; got {out['region']!r}")
        elif out["region"]:
            raise InvalidArgument(f"this provider offers no region choice; got region {out['region']!r}")
        images = self.images(config)
        if images and out["os"] not in images:
            raise InvalidArgument(f"os must be one of {', '.join(images)}; got {out['os']!r}")
        if not images and out["os"]:
            raise InvalidArgument(f"this provider has no OS images (root disks are blank); got os {out['os']!r}")
        return out

    def _bounds(self, config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
        def limit(key: str) -> int:
            return int(self.setting(config, key))

        return {
            "cpu_cores": (1, limit("max_cpu_cores")),
            "memory_gb": (1, limit("max_memory_gb")),
            "disk_gb": (limit("min_disk_gb"), limit("max_disk_gb")),
            "bandwidth_mbps": (0, limit("max_bandwidth_mbps")),
        }

    def monthly(self, config: Mapping[str, Any], spec: Mapping[str, Any]) -> Decimal:
        """The monthly price of a checked spec: base + per-unit prices, the OS image's surcharge,
        then the region's multiplier and surcharge."""

        def price(key: str) -> Decimal:
            return non_negative_decimal(key, self.setting(config, key))

        total: Decimal = (
            price("price_base")
            + price("price_per_core") * spec["cpu_cores"]
            + price("price_per_gb_memory") * spec["memory_gb"]
            + price("price_per_gb_disk") * spec["disk_gb"]
            + price("price_per_mbps") * spec["bandwidth_mbps"]
        )
        image = self.images(config).get(spec.get("os") or "")
        if image and image.get("price_extra"):
            total += non_negative_decimal(f"images[{spec['os']!r}].price_extra", image["price_extra"])
        region = self.regions(config).get(spec.get("region") or "")
        if region:
            where = f"regions[{spec['region']!r}]"
            total *= non_negative_decimal(f"{where}.price_multiplier", region.get("price_multiplier") or "1")
            total += non_negative_decimal(f"{where}.price_extra", region.get("price_extra") or "0")
        return total

    def cycles(self, config: Mapping[str, Any]) -> tuple[str, dict[str, Decimal]]:
        """The billing cycle QueryPrice answers for, and every cycle's multiplier of the monthly
        price; a cycle that is not among the multipliers is the admin's mistake (FAILED_PRECONDITION)."""
        raw = self.setting(config, "billing_cycles")
        if not isinstance(raw, dict) or not raw:
            raw = {"monthly": "1"}
        cycles = {str(k): non_negative_decimal(f"billing_cycles[{k!r}]", v) for k, v in raw.items()}
        cycle = str(self.setting(config, "billing_cycle"))
        if cycle not in cycles:
            raise FailedPrecondition(f"billing_cycle {cycle!r} is not one of billing_cycles ({', '.join(cycles)})")
        return cycle, cycles

    def quote(self, config: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """What ``query_price`` returns for ``spec``."""
        checked = self.check_spec(config, spec)
        cycle, cycles = self.cycles(config)
        return {
            "amount": cycle_amount(self.monthly(config, checked), cycles[cycle]),
            "currency": str(self.setting(config, "currency")),
            "billing_cycle": cycle,
        }

    def products(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """What ``sync_products`` returns: the configured plans, each priced for every cycle. A plan
        outside the limits is the admin's mistake (FAILED_PRECONDITION), so nothing is synced."""
        cycle, cycles = self.cycles(config)
        products = []
        for i, plan in enumerate(self.setting(config, "plans") or []):
            try:
                spec = self.check_spec(config, plan)
            except PluginError as exc:
                why = exc.message
                raise FailedPrecondition(f"plan {plan.get('id', i)!r} does not fit this provider: {why}") from None
            price = plan.get("price")
            fixed = price not in (None, "")
            monthly = non_negative_decimal(f"plans[{i}].price", price) if fixed else self.monthly(config, spec)
            products.append(
                {
                    "id": str(plan["id"]),
                    "name": str(plan["name"]),
                    "description": str(plan.get("description") or ""),
                    "group_id": str(plan.get("group_id") or spec["region"]),
                    "currency": str(self.setting(config, "currency")),
                    "price": cycle_amount(monthly, cycles[cycle]),
                    "billing_cycles": {c: cycle_amount(monthly, m) for c, m in cycles.items()},
                    "specs": {k: str(v) for k, v in spec.items() if v not in ("", None)},
                }
            )
        return products

    def spec_template(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """What ``spec_template`` returns: the four numbers with this config's limits, then the OS
        (when there are images) and the region (when there are regions)."""
        regions, images = self.regions(config), self.images(config)
        (cpu_lo, cpu_hi), (mem_lo, mem_hi), (disk_lo, disk_hi), (bw_lo, bw_hi) = self._bounds(config).values()

        def number(key: str, required: bool, lo: int, hi: int, default: int) -> dict[str, Any]:
            return {"key": key, "label": self._labels()[key], "field_type": "Integer", "required": required,
                    "min": lo, "max": hi, "default_value": str(default)}  # fmt: skip

        fields = [
            number("cpu_cores", True, cpu_lo, cpu_hi, 1),
            number("memory_gb", True, mem_lo, mem_hi, 1),
            number("disk_gb", True, disk_lo, disk_hi, max(10, disk_lo)),
            number("bandwidth_mbps", False, bw_lo, bw_hi, 0),
        ]
        groups = [
            {"key": "compute", "label": "Compute", "field_keys": ["cpu_cores", "memory_gb"]},
            {"key": "storage", "label": "Storage", "field_keys": ["disk_gb"]},
            {"key": "network", "label": "Network", "field_keys": ["bandwidth_mbps"] + (["region"] if regions else [])},
        ]
        if images:
            fields.append(
                {"key": "os", "label": "Operating system", "field_type": "OsOptions", "required": False,
                 "options": list(images), "default_value": self.default_os(config)}
            )  # fmt: skip
            groups.append({"key": "system", "label": "System", "field_keys": ["os"]})
        if regions:
            fields.append(
                {"key": "region", "label": "Region", "field_type": "Region", "required": True,
                 "options": list(regions), "default_value": next(iter(regions))}
            )  # fmt: skip
        return {"fields": fields, "groups": groups}

    def _labels(self) -> dict[str, str]:
        return {
            "cpu_cores": f"{self.cpu}s",
            "memory_gb": "Memory (GiB)",
            "disk_gb": "Disk (GiB)",
            "bandwidth_mbps": "Bandwidth (Mbit/s)",
        }

    # ------------------------------------------------------------ config_schema pieces

    def images_properties(self, image: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
        """``images`` (OS name → the plugin's ``image`` schema) and ``default_os``."""
        return {
            "images": map_prop("Images per OS", description, image, **extra),
            "default_os": prop(
                "string",
                "Default OS",
                "Used when an order names no OS. Empty: the first of images.",
                maxLength=100,
                default="",
            ),
        }

    def properties(self, region: dict[str, Any]) -> dict[str, Any]:
        """The schema of every key ServerPricing reads, in the order the console shows them:
        currency and cycles, the price rules, ``regions`` (of the plugin's ``region`` schema), the
        plans, and the limits."""
        d, labels = self.defaults, self._labels()
        return {
            "currency": prop(
                "string", "Currency", "ISO 4217 code of the prices.", pattern=r"^[A-Z]{3}$", default=d["currency"]
            ),
            "billing_cycle": prop(
                "string",
                "Billing cycle of QueryPrice",
                "One of billing_cycles.",
                pattern=_CYCLE_PATTERN,
                default=d["billing_cycle"],
            ),
            "billing_cycles": map_prop(
                "Billing cycles",
                'Cycle → multiplier of the monthly price (e.g. quarterly: "3", yearly: "10").',
                {"type": "string", "pattern": DECIMAL_PATTERN},
                names=_CYCLE_PATTERN,
                default=d["billing_cycles"],
            ),
            "price_base": money_prop("Base price", f"Monthly price of every {self.unit}.", d["price_base"]),
            "price_per_core": money_prop(f"Price per {self.cpu}", f"Monthly, per {self.cpu}.", d["price_per_core"]),
            "price_per_gb_memory": money_prop("Price per GiB memory", "Monthly, per GiB.", d["price_per_gb_memory"]),
            "price_per_gb_disk": money_prop(
                "Price per GiB disk", f"Monthly, per GiB of {self.disk}.", d["price_per_gb_disk"]
            ),
            "price_per_mbps": money_prop("Price per Mbit/s", "Monthly, per Mbit/s of bandwidth.", d["price_per_mbps"]),
            "regions": map_prop(
                "Regions",
                f"Region name → {{{', '.join(region['properties'])}}}. Empty: no region choice.",
                region,
                default=d["regions"],
            ),
            "plans": prop("array", "Plans", "Products for SyncProducts.", items=self._plan(), default=d["plans"]),
            "max_cpu_cores": prop(
                "integer",
                f"Max {labels['cpu_cores']}",
                "Largest cpu_cores accepted.",
                minimum=1,
                maximum=1024,
                default=d["max_cpu_cores"],
            ),
            "max_memory_gb": prop(
                "integer",
                "Max memory (GiB)",
                "Largest memory_gb accepted.",
                minimum=1,
                maximum=65536,
                default=d["max_memory_gb"],
            ),
            "min_disk_gb": prop(
                "integer", "Min disk (GiB)", "Smallest disk_gb accepted.", minimum=1, default=d["min_disk_gb"]
            ),
            "max_disk_gb": prop(
                "integer",
                "Max disk (GiB)",
                "Largest disk_gb accepted.",
                minimum=1,
                maximum=1000000,
                default=d["max_disk_gb"],
            ),
            "max_bandwidth_mbps": prop(
                "integer",
                "Max bandwidth (Mbit/s)",
                "Largest bandwidth_mbps accepted.",
                minimum=0,
                maximum=1000000,
                default=d["max_bandwidth_mbps"],
            ),
        }

    def _plan(self) -> dict[str, Any]:
        labels = self._labels()
        return object_schema(
            "Plan",
            "A fixed product offered through SyncProducts.",
            {
                "id": prop("string", "Plan id", "Stable product id.", pattern=r"^[A-Za-z0-9._-]{1,64}$"),
                "name": prop("string", "Name", "Product name.", minLength=1, maxLength=200),
                "description": prop("string", "Description", "Product description.", maxLength=2000),
                "group_id": prop("string", "Group", "Product group id (default: the plan's region).", maxLength=64),
                "cpu_cores": prop("integer", labels["cpu_cores"], f"Number of {self.cpu}s.", minimum=1, maximum=1024),
                "memory_gb": prop("integer", labels["memory_gb"], "Memory in GiB.", minimum=1, maximum=65536),
                "disk_gb": prop(
                    "integer", labels["disk_gb"], f"Size of the {self.disk} in GiB.", minimum=1, maximum=1000000
                ),
                "bandwidth_mbps": prop("integer", labels["bandwidth_mbps"], "NIC inbound/outbound limit.", minimum=0),
                "region": prop("string", "Region", "One of the configured regions.", maxLength=100),
                "os": prop("string", "OS", "One of the configured images.", maxLength=100),
                "price": prop(
                    "string",
                    "Monthly price",
                    "Fixed monthly price; empty: computed from the price rules. Decimal string.",
                    pattern=r"^(\d{1,12}(\.\d{1,8})?)?$",
                ),
            },
            required=["id", "name", "cpu_cores", "memory_gb", "disk_gb"],
        )
