"""Plugin isolation (issue 10): every way a plugin can hurt the server costs only its own calls.

Each row of the issue's fault table is a test on a real server: the faulty call ends with the right
status within its deadline + 1 s, calls of another plugin's interface stay within 2x of their
latency before the fault, the server keeps serving, and SIGTERM still stops it within the drain
timeout + 2 s.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import TEST_PLUGINS, Databases, ServerProcess, child_pids, create_interface, md, raises_code

from rustbill.pb import integration_pb2 as pb

DEADLINE = 2.0  # admin_* timeout of these servers
DRAIN = 3.0  # their grace_seconds


def _server(tmp: Path, databases: Databases, **env: str) -> ServerProcess:
    srv = ServerProcess(
        tmp,
        databases.new(),
        plugins=[TEST_PLUGINS / "t_faults.py", TEST_PLUGINS / "t_provider.py"],
        env={
            "RUSTBILL_PLUGINS__TIMEOUTS": json.dumps({"admin_*": DEADLINE}),
            "RUSTBILL_SERVER__GRACE_SECONDS": str(DRAIN),
            # (a machine loaded by other test runs gives a spinning thread little CPU: a low bar)
            "RUSTBILL_PLUGINS__IDLE_CPU_SECONDS": "1",
            # (the faults of one test would suspend the plugin for the next: the breaker has its own test)
            "RUSTBILL_PLUGINS__BREAKER_FAULTS": "1000",
            **env,
        },
    )
    return srv.start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[ServerProcess]:
    s = _server(tmp_path_factory.mktemp("iso"), databases)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def token(srv: ServerProcess) -> str:
    return srv.token()


@pytest.fixture(scope="module")
def faulty(srv: ServerProcess, token: str) -> Any:
    return create_interface(srv.stub(), token, "t_faults")


@pytest.fixture(scope="module")
def healthy(srv: ServerProcess, token: str) -> Any:
    return create_interface(srv.stub(), token, "t_provider", json.dumps({"regions": ["eu"]}))


def action(srv: ServerProcess, token: str, iface: Any, function: str, timeout: float = 30, **args: Any) -> Any:
    reply = srv.stub().CallPluginAction(
        pb.CallPluginActionRequest(interface_id=iface.id, function=function, args_json=json.dumps(args)),
        metadata=md(token),
        timeout=timeout,
    )
    return json.loads(reply.result_json)


def healthy_latency(srv: ServerProcess, token: str, iface: Any, n: int = 15) -> float:
    """Median seconds of a QueryPrice on the healthy plugin's interface."""
    stub = srv.stub()
    req = pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=1, memory_gb=1, disk_gb=10, bandwidth_mbps=10)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        stub.QueryPrice(req, metadata=md(token), timeout=10)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def within_twice(during: float, before: float) -> bool:
    # 2x, with 10 ms of slack for a machine shared with other test runs
    return during <= 2 * before + 0.010


def baseline(srv: ServerProcess, token: str, iface: Any, before: float) -> float:
    """The healthy latency without the fault: the larger of before and after it, so that the
    machine's own load (other test processes) is not counted against the isolation."""
    return max(before, healthy_latency(srv, token, iface))


def fault_while_measuring(srv: ServerProcess, token: str, healthy: Any, fault: Any) -> tuple[float, float, dict]:
    """Run ``fault()`` in a thread; measure healthy latency before and while it runs."""
    before = healthy_latency(srv, token, healthy)
    out: dict[str, Any] = {}

    def run() -> None:
        t = time.monotonic()
        try:
            out["value"] = fault()
        except grpc.RpcError as exc:
            out["code"], out["message"] = exc.code(), exc.details()
        out["seconds"] = time.monotonic() - t

    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.6)  # (a worker that keeps a core busy is lowered in priority within half a second)
    # The best of three rounds: another process's burst on this shared machine slows one round; a
    # fault that the isolation does not contain slows them all.
    during = min(healthy_latency(srv, token, healthy, n=8) for _ in range(3))
    th.join(60)
    return before, during, out


def test_an_async_busy_loop_costs_only_its_call(srv: ServerProcess, token: str, faulty: Any, healthy: Any) -> None:
    before, during, out = fault_while_measuring(srv, token, healthy, lambda: action(srv, token, faulty, "admin_busy"))
    assert out["code"] == grpc.StatusCode.DEADLINE_EXCEEDED, out
    assert out["message"] == f"plugin 't_faults' admin_busy did not finish within {DEADLINE:g}s"
    assert out["seconds"] < DEADLINE + 1
    srv.wait_for_log(r"plugin t_faults: killing worker process \d+: call admin_busy of interface .* did not give")
    assert within_twice(during, baseline(srv, token, healthy, before)), (before, during)
    assert action(srv, token, faulty, "admin_ping")["pid"] > 0  # a new worker serves it


def test_a_plugin_that_exits_its_process_fails_only_its_calls(
    srv: ServerProcess, token: str, faulty: Any, healthy: Any
) -> None:
    pid = action(srv, token, faulty, "admin_ping")["pid"]
    before, during, out = fault_while_measuring(srv, token, healthy, lambda: action(srv, token, faulty, "admin_exit"))
    assert out["code"] == grpc.StatusCode.UNAVAILABLE, out
    assert out["message"] == "plugin 't_faults' admin_exit: plugin process for 't_faults' exited (code 1)"
    assert out["seconds"] < DEADLINE + 1
    assert within_twice(during, baseline(srv, token, healthy, before)), (before, during)
    t = time.monotonic()
    new = action(srv, token, faulty, "admin_ping")["pid"]
    assert new != pid and time.monotonic() - t < 1.0  # replaced and serving again within a second


def test_a_huge_allocation_is_resource_exhausted(srv: ServerProcess, token: str, faulty: Any, healthy: Any) -> None:
    before, during, out = fault_while_measuring(srv, token, healthy, lambda: action(srv, token, faulty, "admin_alloc"))
    assert out["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED, out
    assert "admin_alloc ran out of memory (plugins.memory_limit_mb = 1024)" in out["message"]
    assert out["seconds"] < DEADLINE + 1
    assert within_twice(during, baseline(srv, token, healthy, before)), (before, during)
    assert action(srv, token, faulty, "admin_ping")["pid"] > 0


def test_seventy_hanging_calls_do_not_take_other_plugins_down(
    srv: ServerProcess, token: str, faulty: Any, healthy: Any
) -> None:
    before = healthy_latency(srv, token, healthy)
    results: list[tuple[Any, float]] = []
    lock = threading.Lock()

    def hang() -> None:
        t = time.monotonic()
        try:
            action(srv, token, faulty, "admin_hang")
            code: Any = "answered"
        except grpc.RpcError as exc:
            code = exc.code()
        with lock:
            results.append((code, time.monotonic() - t))

    threads = [threading.Thread(target=hang) for _ in range(70)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    during = healthy_latency(srv, token, healthy, n=8)
    for th in threads:
        th.join(60)
    assert {code for code, _ in results} == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert max(s for _, s in results) < DEADLINE + 1 + 1.0  # (+1 s: 70 client threads start one by one)
    assert within_twice(during, baseline(srv, token, healthy, before)), (before, during)
    # the plugin itself serves again: its stuck worker was replaced
    assert action(srv, token, faulty, "admin_ping")["pid"] > 0


def test_a_thread_burning_cpu_in_the_background_is_stopped(
    srv: ServerProcess, token: str, faulty: Any, healthy: Any
) -> None:
    before = healthy_latency(srv, token, healthy)
    mark = srv.log_mark()
    assert action(srv, token, faulty, "admin_spin") == {"spinning": True}
    # lowered to the lowest CPU priority within a quarter second or two, killed within seconds
    srv.wait_for_log(r"plugin t_faults: worker process \d+ keeps a core busy: lowered|with no call running", start=mark)
    during = healthy_latency(srv, token, healthy, n=8)
    srv.wait_for_log(r"plugin t_faults: killing worker process \d+: .* with no call running", timeout=30, start=mark)
    assert within_twice(during, baseline(srv, token, healthy, before)), (before, during)
    assert action(srv, token, faulty, "admin_ping")["pid"] > 0


def test_plugin_code_gets_its_context_state_and_log(srv: ServerProcess, token: str, faulty: Any) -> None:
    ctx = action(srv, token, faulty, "admin_context")
    assert ctx["interface_id"] == faulty.id and ctx["interface_name"] == faulty.display_name
    assert ctx["function"] == "admin_context" and ctx["caller"] == "admin"
    assert 0 < ctx["remaining"] <= DEADLINE
    assert ctx["state"] == ctx["request_id"]  # sdk.state() went through the server to the database
    srv.wait_for_log(rf"context asked by admin \[interface {re.escape(faulty.display_name)}\]")
    srv.wait_for_log(rf"plugin call .*function=admin_context .*request_id={ctx['request_id']} ")
    assert action(srv, token, faulty, "admin_state_sync") == {"n": 1}  # from a def, too
    assert action(srv, token, faulty, "admin_state_sync") == {"n": 2}


def test_a_plugin_that_keeps_crashing_is_suspended_and_health_says_why(tmp_path: Path, databases: Databases) -> None:
    srv = _server(tmp_path, databases, RUSTBILL_PLUGINS__BREAKER_FAULTS="3")
    try:
        token = srv.token()
        iface = create_interface(srv.stub(), token, "t_faults")
        for _ in range(3):
            with raises_code(grpc.StatusCode.UNAVAILABLE, r"exited \(code 1\)"):
                action(srv, token, iface, "admin_exit")
            time.sleep(1.2)  # (past the restart delay)
        with raises_code(grpc.StatusCode.UNAVAILABLE, r"plugin 't_faults' is suspended after 3 faults in 60 s .*"):
            action(srv, token, iface, "admin_ping")
        reply = srv.stub().CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token))
        assert not reply.is_healthy and "suspended after 3 faults" in reply.error
        srv.wait_for_log(r"plugin t_faults suspended for 60 s: 3 faults in 60 s")
    finally:
        srv.stop()


@pytest.mark.parametrize("fault", ["admin_hang", "admin_thread", "admin_busy"])
def test_sigterm_stops_the_server_whatever_a_plugin_does(tmp_path: Path, databases: Databases, fault: str) -> None:
    # calls may run longer than the drain timeout: the server must not wait for them
    srv = _server(tmp_path, databases, RUSTBILL_PLUGINS__TIMEOUTS=json.dumps({"admin_*": 60}))
    token = srv.token()
    iface = create_interface(srv.stub(), token, "t_faults")
    if fault == "admin_thread":
        action(srv, token, iface, fault)  # returns, leaving its thread behind
    else:
        threading.Thread(target=lambda: _ignore(lambda: action(srv, token, iface, fault, timeout=90))).start()
        time.sleep(0.5)
    workers = _worker_pids(srv)
    assert workers
    t = time.monotonic()
    srv.stop(timeout=DRAIN + 10)
    assert time.monotonic() - t < DRAIN + 2
    time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "a plugin worker outlived the server"


def _ignore(fn: Any) -> None:
    try:
        fn()
    except grpc.RpcError:
        pass


def _worker_pids(srv: ServerProcess) -> list[int]:
    """Processes whose parent's parent is the server (the zygote's children)."""
    assert srv.proc is not None
    return [w for z in child_pids(srv.proc.pid) for w in child_pids(z)]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _zygote(srv: ServerProcess) -> tuple[int, str]:
    """The server's plugin zygote: (pid, command line)."""
    assert srv.proc is not None
    found = [p for p in child_pids(srv.proc.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "rb:zygote"]
    assert len(found) == 1, found
    return found[0], Path(f"/proc/{found[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_zygote_that_dies_is_reaped_and_started_again(tmp_path: Path, databases: Databases) -> None:
    """``rustbill serve`` forks its plugin zygote from itself at start (no interpreter of its own).
    Killed, it is reaped (no zombie is left) and the next call starts a new one, this time as an
    interpreter of its own, and is answered."""
    srv = _server(tmp_path, databases)
    try:
        token = srv.token()
        iface = create_interface(srv.stub(), token, "t_provider", json.dumps({"regions": ["eu"]}))
        request = pb.QueryPriceRequest(interface_id=iface.id, cpu_cores=1, memory_gb=1, disk_gb=10)
        assert srv.stub().QueryPrice(request, metadata=md(token), timeout=10).amount
        first, cmdline = _zygote(srv)
        assert "rustbill.plugins.zygote" not in cmdline, cmdline  # forked from the server
        workers = child_pids(first)
        assert workers
        os.kill(first, 9)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{first}").exists():  # reaped by the server: not even a zombie
            assert time.monotonic() < deadline, Path(f"/proc/{first}/stat").read_text()
            time.sleep(0.05)
        while any(_alive(w) for w in workers):  # its workers die with it
            assert time.monotonic() < deadline, workers
            time.sleep(0.05)
        while True:
            try:
                assert srv.stub().QueryPrice(request, metadata=md(token), timeout=10).amount
                break
            except grpc.RpcError as exc:  # (its worker died with it: the call it was in ends UNAVAILABLE)
                assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, exc
                time.sleep(0.2)
        second, cmdline = _zygote(srv)
        assert second != first and "-m rustbill.plugins.zygote" in cmdline, cmdline
    finally:
        srv.stop()
