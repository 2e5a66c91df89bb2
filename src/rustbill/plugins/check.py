"""``rustbill plugin check``: a plugin tried against its contract before a customer's call does.

Each file is loaded as the server loads it (``sdk.testing.PluginHost``: the scanner, the registry and
the runtime, on a temporary SQLite database), so the load checks and their messages are the
server's. Then an interface is made from the given config (or one made from the schema) and every
contract function the plugin defines is called with the contract's sample arguments, with the
server's timeouts, and its result is checked by the contract's own checker.

Outcomes, one per function:
- ``ok``: the result has the contract's shape;
- ``refused``: the plugin answered the sample with an error of its own (``sdk.PluginError``), e.g.
  NOT_FOUND for an order it never saw: a legitimate answer, not a violation;
- ``unreachable``: the remote system could not be reached (UNAVAILABLE, or it did not answer in time):
  the contract could not be checked, which is not a violation;
- ``violation``: a result of the wrong shape, an exception, a call that outlived its timeout, a load
  error or a config schema the server refuses to enable;
- ``absent``: the plugin does not define the function; ``skipped``: not called (admin_* actions take
  arguments only their admin page knows).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..sdk.testing import PluginHost, PluginLoadFailed
from .contract import (
    CHECKERS,
    FUNCTIONS_BY_TYPE,
    ShapeError,
    metadata_error,
    sample_message,
    sample_notify_request,
    sample_order,
    sample_spec,
)

__all__ = ["Finding", "PluginCheck", "check_path"]

OUTCOMES = ("ok", "refused", "unreachable", "violation", "absent", "skipped")


@dataclass
class Finding:
    function: str
    outcome: str  # one of OUTCOMES
    detail: str = ""
    got: str = ""  # what came back, for a result of the wrong shape


@dataclass
class PluginCheck:
    file: str
    plugin_id: str
    plugin_type: str = ""
    version: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.outcome == "violation" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def plugin_files(path: Path) -> list[Path]:
    """The plugin files of ``path`` (a file, or the top level of a folder, as the server scans it)."""
    if path.is_dir():
        return [p for p in sorted(path.iterdir()) if p.suffix == ".py" and not p.name.startswith(("_", "."))]
    return [path]


async def check_path(
    path: Path,
    *,
    config: dict[str, Any] | None = None,
    call_timeout: float = 30.0,
    timeouts: dict[str, float] | None = None,
) -> list[PluginCheck]:
    """Check every plugin file of ``path`` (see the module's docstring)."""
    return [await _check_file(f, config, call_timeout, timeouts) for f in plugin_files(path)]


async def _check_file(
    path: Path, config: dict[str, Any] | None, call_timeout: float, timeouts: dict[str, float] | None
) -> PluginCheck:
    report = PluginCheck(file=str(path), plugin_id=path.stem)
    host = PluginHost(path, call_timeout=call_timeout, timeouts=timeouts)
    try:
        try:
            await host.start()
        except PluginLoadFailed as exc:
            report.findings.append(Finding("load", "violation", str(exc)))
            return report
        plugin = host.loaded
        report.plugin_type, report.version = plugin.plugin_type, plugin.version
        report.findings.append(Finding("version", "ok", plugin.version))
        unusable = metadata_error(path.name, plugin.config_schema)
        report.findings.append(Finding("config_schema", "violation" if unusable else "ok", unusable))
        if unusable:
            return report
        try:
            iid = await host.interface(config)
        except errors.InvalidArgument as exc:
            given = "the given config" if config is not None else "the config made from the schema's examples"
            hint = "" if config is not None else ' (add "examples" to the schema\'s properties, or pass --config)'
            report.findings.append(Finding("config", "violation", f"{given} is refused: {exc.message}{hint}"))
            return report
        await _call_all(host, iid, report)
    finally:
        await host.close()
    return report


async def _call_all(host: PluginHost, iid: uuid.UUID, report: PluginCheck) -> None:
    made: dict[str, Any] = {"request_id": str(uuid.uuid4()), "order": sample_order()}
    defined = set(host.loaded.is_async)
    for function in FUNCTIONS_BY_TYPE[report.plugin_type]:
        if function in ("version", "config_schema"):
            continue  # called by the loader; reported above
        if function not in defined:
            report.findings.append(Finding(function, "absent"))
            continue
        finding, result = await _call(host, iid, function, *_ARGS.get(function, _no_args)(made))
        report.findings.append(finding)
        if finding.outcome == "ok":
            made[function] = result
    for action in sorted(f for f in defined if f.startswith("admin_") and f != "admin_page"):
        report.findings.append(Finding(action, "skipped", "signature checked; not called (it takes arguments)"))


def _no_args(made: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def _instance_id(made: dict[str, Any]) -> str:
    created = made.get("create_instance")
    return created["instance_id"] if created else "sample-instance"


def _notify(made: dict[str, Any]) -> tuple[Any, ...]:
    order, payment = made["order"], made.get("create_payment") or {}
    query = {"out_trade_no": order["order_id"], "trade_no": payment.get("trade_no", ""), "reference": order["order_id"]}
    return (sample_notify_request(order, query),)


# function -> its sample arguments, from what the calls before it made
_ARGS: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
    "query_price": lambda made: (sample_spec(),),
    "create_instance": lambda made: (sample_spec(made["request_id"]),),
    "find_instance": lambda made: (made["request_id"],),
    "get_instance_status": lambda made: (_instance_id(made),),
    "create_payment": lambda made: (made["order"],),
    "verify_notify": _notify,
    "send": lambda made: (sample_message(),),
}


async def _call(host: PluginHost, iid: uuid.UUID, function: str, *args: Any) -> tuple[Finding, Any]:
    bad: dict[str, Any] = {}
    checker = CHECKERS[function]

    def check(raw: Any) -> Any:
        try:
            return checker(raw)
        except ShapeError as exc:
            bad["error"], bad["raw"] = exc, raw
            raise

    timeout = host.runtime.timeout_for(function)
    start = time.monotonic()
    try:
        result = await host.call(iid, function, *args, check=check)
    except errors.RustBillError as err:
        elapsed = time.monotonic() - start
        what = f"{err.code.name}: {err.message}"
        if "error" in bad:
            return Finding(function, "violation", str(bad["error"]), _shown(bad["raw"])), None
        if isinstance(err, errors.Unavailable):
            return Finding(function, "unreachable", what), None
        if isinstance(err, errors.DeadlineExceeded):
            if elapsed >= timeout * 0.95:  # the host's timeout, not the remote system's
                return Finding(function, "violation", f"did not finish within the server's {timeout:g}s"), None
            return Finding(function, "unreachable", what), None
        if isinstance(err, errors.Internal):
            return Finding(function, "violation", err.message), None
        return Finding(function, "refused", what), None
    return Finding(function, "ok", _summary(function, result)), result


def _shown(raw: Any, limit: int = 300) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[:limit] + "…"


def _summary(function: str, result: Any) -> str:
    if function == "health_check":
        return "healthy" if result is None else f"unhealthy: {result}"
    if function == "query_price":
        return f"{result['amount']} {result['currency']} {result['billing_cycle']}".strip()
    if function in ("sync_products", "sync_upstream_instances"):
        return f"{len(result)} item(s)"
    if function in ("create_instance", "get_instance_status", "find_instance"):
        return "none" if result is None else f"{result['instance_id']} {result['status']}".strip()
    return ""


def render(checks: list[PluginCheck]) -> str:
    """The text report: a heading per plugin, one line per function, and a summary."""
    lines: list[str] = []
    for c in checks:
        kind = f" ({c.plugin_type} {c.version})" if c.plugin_type else ""
        lines.append(f"{c.file}: {c.plugin_id}{kind}")
        for f in c.findings:
            label = "VIOLATION" if f.outcome == "violation" else f.outcome
            detail = f.detail + (f"; got {f.got}" if f.got else "")
            lines.append(f"  {label:<11} {f.function:<24} {detail}".rstrip())
    bad = sum(1 for c in checks for f in c.findings if f.outcome == "violation")
    lines.append(f"{len(checks)} plugin(s), {bad} violation(s)")
    return "\n".join(lines)
