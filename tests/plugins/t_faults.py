"""Test plugin whose admin actions misbehave in every way a plugin can hurt a server (issue 10).

Each fault runs in the plugin's worker process; the tests check that only its own call (and at
worst the other calls of this plugin) pay for it.
"""

import os
import threading
import time

from rustbill import sdk

PLUGIN_TYPE = "first_party_provider"


def version():
    return "1.0.0"


def health_check(config):
    return None


async def admin_ping(config):
    return {"pid": os.getpid()}


async def admin_busy(config):
    """An async def that never gives the event loop back."""
    n = 0
    while True:
        n += 1


async def admin_exit(config):
    os._exit(int(config.get("code", 1)))


def admin_alloc(config):
    """One C-level step that asks for 2 GiB."""
    block = bytearray(2 << 30)
    return {"size": len(block)}


def admin_hang(config):
    time.sleep(1e9)


def admin_thread(config):
    """Leaves a non-daemon thread behind that never ends."""
    threading.Thread(target=time.sleep, args=(1e9,)).start()
    return {"started": True}


def admin_spin(config):
    """Leaves a thread behind that burns CPU for ever."""

    def spin():
        n = 0
        while True:
            n += 1

    threading.Thread(target=spin, daemon=True).start()
    return {"spinning": True}


async def admin_context(config):
    ctx = sdk.context()
    await sdk.state().aset("seen", ctx.request_id)
    sdk.logger(__name__).info("context asked by %s", ctx.caller)
    return {
        "interface_id": ctx.interface_id,
        "interface_name": ctx.interface_name,
        "function": ctx.function,
        "request_id": ctx.request_id,
        "caller": ctx.caller,
        "remaining": ctx.remaining(),
        "state": await sdk.state().aget("seen"),
    }


def admin_state_sync(config):
    st = sdk.state()
    st.set("n", st.get("n", 0) + 1)
    return {"n": st.get("n")}
