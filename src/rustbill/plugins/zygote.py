"""The zygote: the one process that forks plugin workers.

The server starts it once (``python -m rustbill.plugins.zygote FD``) with one end of a
SOCK_SEQPACKET socket pair as FD. It imports what every worker needs (the SDK, httpx, the
loader) once, so that the forked workers share those pages, and then waits for requests:

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

# The Python documentation's advice for a process that forks: the collector off from the start,
# gc.freeze() before forking (main()), on again in each child (_child()).
gc.disable()

import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

_PR_SET_PDEATHSIG = 1
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


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    parent = int(sys.argv[2])
    die_with_parent()
    if os.getppid() != parent:
        os._exit(0)  # the server ended before we could follow it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    _name("rb:zygote")
    from . import worker

    worker.preload()
    # (the collector has been off since this module started: a collection now would free objects
    # in the middle of pages that every worker would then fill, and so copy)
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
