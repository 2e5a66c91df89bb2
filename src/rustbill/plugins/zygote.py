"""The zygote: the one process that forks plugin workers.

``rustbill serve`` forks it from itself as its first step, before the server starts any thread
(``fork_from_here``): it then has every module the server imported, the SDK, httpx and the loader
among them, without starting an interpreter and importing them again. Any other process (a
server started in-process, a zygote that died and is started again) runs it as an interpreter of
its own: ``python -m rustbill.plugins.zygote FD PID``, which imports what every worker needs.
Either way it talks over one end of a SOCK_SEQPACKET socket pair, the workers it forks share its
pages, and it waits for requests:

- ``{"id": n, ...}`` with a stream socket attached (SCM_RIGHTS) → forks a worker serving that
  socket and answers ``{"id": n, "pid": pid}``;
- when a worker ends it answers ``{"exited": pid, "code": c}`` (a negative code is the signal).

It never runs plugin code itself. It dies with the server (PR_SET_PDEATHSIG) and its workers die
with it; a worker whose socket closes exits too.

Why not ``multiprocessing``'s forkserver: it re-imports the parent's ``__main__`` in every child
when the server runs as a console script (the whole server, in every worker), and it reports
exit codes only to the parent that started the process; this file is the part of it we need.
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # The Python documentation's advice for a process that forks: the collector off from the
    # start, gc.freeze() before forking (_serve()), on again in each child (_child()).
    gc.disable()

import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # glibc's mallopt() parameter (malloc.h)
_PR_SET_NAME = 15


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends (no-op elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _name(name: str) -> None:
    """The process name ps and top show (15 bytes): which plugin a worker runs."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def fork_from_here() -> tuple[int, socket.socket] | None:
    """Fork the zygote from this process: (its pid, this side's end of its control socket), or
    None when this process already runs a thread besides this one (a lock another thread held at
    the fork would stay locked in the zygote forever) or cannot fork.

    The zygote is this process's child; whoever takes it must reap it (``os.waitpid``)."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return None
    if threads != 1 or not hasattr(os, "fork"):
        return None
    from . import worker  # noqa: F401  (imported before the fork: the server and the zygote share it)

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):  # (else what they hold would be written again by a worker)
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid != 0:
        theirs.close()
        return pid, ours
    code = 70
    try:
        gc.disable()
        ours.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        # What the server sets for a zygote started as an interpreter: at most two malloc arenas
        # (a worker's threads would each reserve 64 MiB of address space, which counts against
        # plugins.memory_limit_mb); here glibc has already read the environment, so mallopt says it.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        with contextlib.suppress(OSError, AttributeError, ValueError):
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, int(os.environ["MALLOC_ARENA_MAX"]))
        _serve(theirs, parent)
    except (BrokenPipeError, ConnectionResetError):
        code = 0  # the server ended first (it could not listen, say): nothing to report
    except BaseException:  # (the child must never return into the server)
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def main() -> None:
    _serve(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))


def _serve(ctl: socket.socket, parent: int) -> None:
    die_with_parent()
    if os.getppid() != parent:
        os._exit(0)  # the server ended before we could follow it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    _name("rb:zygote")
    from . import worker

    worker.preload()
    # (the collector has been off since this process started or forked: a collection now would
    # free objects in the middle of pages that every worker would then fill, and so copy)
    gc.freeze()  # the workers' collector leaves the shared objects alone

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    while True:
        for key, _ in sel.select():
            if key.fileobj is ctl:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(ctl, 65536, 1)
                except InterruptedError:
                    continue
                if not msg:
                    os._exit(0)  # the server closed its end
                request = json.loads(msg)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    _child(ctl, (wake_r, wake_w), fds, request)
                for fd in fds:
                    os.close(fd)
                ctl.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                os.read(wake_r, 4096)
        _reap(ctl)


def _reap(ctl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ctl.send(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def _child(ctl: socket.socket, wake: tuple[int, int], fds: list[int], request: dict[str, Any]) -> None:
    code = 70
    try:
        gc.enable()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.close()
        for fd in wake:
            os.close(fd)
        die_with_parent()
        _name(f"rb:{request.get('plugin_id', '')}")
        if int(request.get("nice", 0)):
            os.nice(int(request.get("nice", 0)))
        # (print() of plugins, line by line)
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a TextIOWrapper; typed TextIO
        limit = int(request.get("memory_limit_mb", 0))
        if limit > 0:
            resource.setrlimit(resource.RLIMIT_AS, (limit << 20, limit << 20))
        from . import worker

        worker.run(socket.socket(fileno=fds[0]))
        code = 0
    except BaseException:  # (the child must never return into the zygote's loop)
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


if __name__ == "__main__":
    main()
