"""A real LXD daemon for tests: Debian 12's ``lxd`` (5.0.2), started by hand in a temporary
``LXD_DIR`` (no systemd, no ``lxd init``), talking the same REST API as Incus on its unix socket.

What :meth:`LxdDaemon.start` sets up, all through the REST API:

- a ``dir`` storage pool named ``default``, and the ``default`` profile with only a root disk on it
  (no NIC: there is no bridge and no internet here);
- a local image, alias ``busybox``: a unified tarball (``metadata.yaml`` + ``rootfs/``) built on the
  spot from Debian's statically linked ``busybox`` (package ``busybox-static``), so no image server
  is needed. Its ``/sbin/init`` is busybox's init, which halts on SIGPWR (LXD's clean stop).

Containers do start here (cgroup v1 controllers, no AppArmor: LXD says so in its log and carries on).
:meth:`LxdDaemon.stop` force-stops what still runs, shuts the daemon down, unmounts what it mounted
under its directory and removes it. Scripts: ``scripts/system-deps test`` installs ``lxd`` and
``busybox-static``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from typing import Any

import httpx

__all__ = ["BUSYBOX", "LxdDaemon", "lxd_missing"]

BUSYBOX = "/bin/busybox"  # from busybox-static: statically linked, so it runs alone in a rootfs


def lxd_missing() -> str:
    """Why the real daemon cannot be used here ("" when it can): only a missing install."""
    missing = [what for what, ok in (("lxd", shutil.which("lxd")), ("busybox-static", _static_busybox())) if not ok]
    return f"not installed: {', '.join(missing)} (scripts/system-deps test)" if missing else ""


def _static_busybox() -> bool:
    try:
        with open(BUSYBOX, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"/lib64/ld-linux" not in head and b"/lib/ld-linux" not in head


class LxdDaemon:
    def __init__(self) -> None:
        # AF_UNIX paths must stay short: the socket is <dir>/unix.socket
        self.dir = tempfile.mkdtemp(prefix="lxd-", dir="/tmp")
        self.socket_path = os.path.join(self.dir, "unix.socket")
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.image_fingerprint = ""

    # ------------------------------------------------------------ life cycle

    def start(self) -> LxdDaemon:
        env = {**os.environ, "LXD_DIR": self.dir}
        log = open(os.path.join(self.dir, "daemon.out"), "wb")
        self.proc = subprocess.Popen(
            ["lxd", "--logfile", os.path.join(self.dir, "lxd.log")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            subprocess.run(["lxd", "waitready", "--timeout", "30"], env=env, check=True, capture_output=True)
            self.client = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket_path), timeout=30)
            self.request("POST", "/1.0/storage-pools", {"name": "default", "driver": "dir"})
            self.request(
                "PUT",
                "/1.0/profiles/default",
                {"description": "test profile: root disk only", "config": {},
                 "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}},
            )  # fmt: skip
            self._import_busybox()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.client is not None:
            try:
                for inst in self.request("GET", "/1.0/instances?recursion=1") or []:
                    if inst.get("status") != "Stopped":
                        self.request("PUT", f"/1.0/instances/{inst['name']}/state", {"action": "stop", "force": True})
            except (httpx.HTTPError, RuntimeError):
                pass
            self.client.close()
            self.client = None
        if self.proc is not None:
            env = {**os.environ, "LXD_DIR": self.dir}
            subprocess.run(["lxd", "shutdown", "--timeout", "20"], env=env, capture_output=True, timeout=30)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None
        self._unmount_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _unmount_all(self) -> None:
        """LXD mounts small tmpfs (devlxd, shmounts) and the pool's volumes under its directory."""
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(self.dir + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    # ------------------------------------------------------------ REST

    @property
    def config(self) -> dict[str, Any]:
        """An incus interface config for this daemon: the unix socket, the busybox image, no NIC."""
        return {
            "socket_path": self.socket_path,
            "images": {"busybox": {"alias": "busybox"}},
            "network": "",
            "storage_pool": "default",
            "profiles": ["default"],
            "operation_timeout_seconds": 20,
        }

    def request(self, method: str, path: str, body: Any = None, *, wait: bool = True, **kw: Any) -> Any:
        """One API call; an async one is waited for (unless ``wait`` is false: then the operation
        itself is returned). Raises RuntimeError with LXD's error text."""
        assert self.client is not None, "the daemon is not running"
        if body is not None and "content" not in kw:
            kw["content"] = json.dumps(body)
        resp = self.client.request(method, "http://lxd" + path, **kw)
        data = resp.json()
        if data.get("type") == "error":
            raise RuntimeError(f"{method} {path}: {data.get('error')}")
        if data.get("type") == "async":
            return self.wait(data["metadata"]["id"]) if wait else data["metadata"]
        return data.get("metadata")

    def wait(self, op_id: str, timeout: int = 60) -> Any:
        """Wait for an operation; its final record (status, err) is returned, whether it failed or not."""
        assert self.client is not None
        url = f"http://lxd/1.0/operations/{op_id}/wait"
        resp = self.client.get(url, params={"timeout": timeout}, timeout=timeout + 5)
        return resp.json().get("metadata")

    def operations(self, instance: str) -> list[dict[str, Any]]:
        """Every operation LXD still remembers (running or recently finished) on ``instance``."""
        ops = self.request("GET", "/1.0/operations?recursion=1") or {}
        return [
            op
            for group in ops.values()
            for op in group or []
            if f"/1.0/instances/{instance}" in (op.get("resources") or {}).get("instances", [])
        ]

    def instance(self, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/1.0/instances/{name}?recursion=1")  # type: ignore[no-any-return]
        except RuntimeError as exc:
            if "not found" in str(exc).lower():
                return None
            raise

    # ------------------------------------------------------------ the image

    def _import_busybox(self) -> None:
        meta = (
            "architecture: x86_64\n"
            f"creation_date: {int(time.time())}\n"
            "properties:\n  description: busybox (tests)\n  os: busybox\n"
        ).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
            _add(tar, "metadata.yaml", data=meta)
            for d in ("rootfs", "rootfs/bin", "rootfs/sbin", "rootfs/etc", "rootfs/dev", "rootfs/proc",
                      "rootfs/sys", "rootfs/tmp", "rootfs/run", "rootfs/root"):  # fmt: skip
                _add(tar, d, kind=tarfile.DIRTYPE, mode=0o755)
            with open(BUSYBOX, "rb") as f:
                _add(tar, "rootfs/bin/busybox", data=f.read(), mode=0o755)
            _add(tar, "rootfs/bin/sh", kind=tarfile.SYMTYPE, link="busybox")
            _add(tar, "rootfs/sbin/init", kind=tarfile.SYMTYPE, link="../bin/busybox")
        op = self.request(
            "POST", "/1.0/images", content=buf.getvalue(), headers={"Content-Type": "application/octet-stream"}
        )
        if op.get("status_code") != 200:
            raise RuntimeError(f"importing the busybox image failed: {op.get('err')}")
        self.image_fingerprint = op["metadata"]["fingerprint"]
        self.request("POST", "/1.0/images/aliases", {"name": "busybox", "target": self.image_fingerprint})


def _add(tar: tarfile.TarFile, name: str, *, data: bytes = b"", kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
         link: str = "") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, int(time.time())
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
