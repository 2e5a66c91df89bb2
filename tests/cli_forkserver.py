"""A fork server for the tests' ``rustbill`` command lines (helpers.ServerProcess.cli) and servers
(helpers.ServerProcess.start: ``rustbill serve`` in a session of its own, its output to a FIFO).

Each ``rustbill ARGS`` of a test is a process of its own, as an operator's is: its own working
folder, environment, standard streams, logging set-up, event loop and exit code. What it saves is
the interpreter start and the imports (typer, pydantic, SQLAlchemy, alembic, grpc, uvicorn,
rustbill), one to two seconds a command: this process imports them once (without running any of
them) and forks one child per command; the child then runs ``python -m rustbill ARGS`` the way the
interpreter does (``runpy``, the interpreter's own exit: SystemExit's code, a traceback and 1 for an
uncaught exception, the atexit handlers, flushed streams; ``sys.orig_argv`` for a server that
re-executes itself on RestartServer).

Protocol (one JSON object a line): the tests write ``{"id", "args", "cwd", "env", "stdin",
"stdout", "stderr", "new_session"}`` (file paths; stdin may be null: /dev/null; stderr the same
path as stdout: one stream, opened once, as a FIFO must be) on this
process's stdin; it answers on its stdout ``{"id", "pid"}`` when the child is forked and
``{"id", "code"}`` when it has ended (a negative code is the signal that ended it, as
subprocess's returncode). It exits when its stdin closes, and dies with the test process that
started it. (It reads and writes the protocol with os.read/os.write on copies of those two file
descriptors, so that the children's sys.stdin and sys.stdout hold nothing of it.)
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import selectors
import signal
import sys
from typing import Any


def _preload() -> None:
    """What the commands import, imported once here (importing runs none of it), and the ORM's set-up."""
    import alembic.command
    import alembic.config
    import alembic.runtime.migration
    import alembic.script  # noqa: F401
    import sqlalchemy.ext.asyncio

    import rustbill.auth
    import rustbill.cli
    import rustbill.db
    import rustbill.domain.ledger
    import rustbill.server  # noqa: F401  (``serve``: grpc, uvicorn, connectrpc; nothing of them runs)

    for driver in ("aiosqlite", "asyncpg", "uvloop"):
        try:
            __import__(driver)
        except ImportError:
            pass
    # The ORM's one-time set-up that its first query or row would do in every command and server
    # (resolving the models' relationships and columns: ~25 ms of CPU each); it reads the models only.
    import sqlalchemy.orm

    sqlalchemy.orm.configure_mappers()


def _serve() -> dict[str, Any]:
    """Fork a child per request; returns (in the child) the request it is to run."""
    try:  # die with the test process
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(sys.argv[1]):
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, answers = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    _preload()
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(requests, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    running: dict[int, Any] = {}
    pending = b""

    def answer(msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        while data:
            data = data[os.write(answers, data) :]

    answer({"ready": os.getpid()})
    while True:
        for key, _ in sel.select():
            if key.fileobj == requests:
                chunk = os.read(requests, 1 << 20)
                if not chunk:
                    os._exit(0)
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    request = json.loads(line)
                    pid = os.fork()
                    if pid == 0:
                        sel.close()
                        signal.set_wakeup_fd(-1)
                        for fd in (wake_r, wake_w, requests, answers):
                            os.close(fd)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGINT, signal.default_int_handler)
                        return request  # type: ignore[no-any-return]
                    running[pid] = request["id"]
                    answer({"id": request["id"], "pid": pid})
            else:
                os.read(wake_r, 4096)
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            rid = running.pop(pid, None)
            if rid is not None:
                answer({"id": rid, "code": os.waitstatus_to_exitcode(status)})


def _become(request: dict[str, Any]) -> None:
    """This child as ``python -m rustbill ARGS`` started in the request's folder and environment."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("new_session"):
        os.setsid()  # (as subprocess.Popen(start_new_session=True))
    for fd, path, mode in (
        (0, request["stdin"] or os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_TRUNC | os.O_CREAT),
        (2, request["stderr"], os.O_WRONLY | os.O_TRUNC | os.O_CREAT),
    ):
        if fd == 2 and path == request["stdout"]:  # (stderr=subprocess.STDOUT; a FIFO opens once)
            os.dup2(1, 2)
            continue
        new = os.open(path, mode, 0o600)
        os.dup2(new, fd)
        os.close(new)
    if os.environ.get("PYTHONUNBUFFERED"):  # (read at start by an interpreter; this one started earlier)
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)  # type: ignore[attr-defined]
    sys.path[0] = os.getcwd()  # (as ``python -m`` does)
    # PYTHONPATH, read at start by an interpreter: its folders come right after sys.path[0] (a test's
    # shim module then hides an installed one from the server and the plugin zygote it forks).
    here = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = here
    sys.argv = ["-m", *request["args"]]
    sys.orig_argv = [sys.executable, "-m", "rustbill", *request["args"]]  # (what a re-executing restart runs)


if __name__ == "__main__":
    _become(_serve())
    import runpy

    runpy.run_module("rustbill", run_name="__main__", alter_sys=True)
