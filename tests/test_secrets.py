"""Write-only plugin secrets: masked in every reply, kept on updates that do not resend them,
encrypted at rest (a database dump reveals none), a wrong key said clearly, rotation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import TEST_PLUGINS, Databases, ServerProcess, md, query_db, raises_code, unique

from rustbill.pb import integration_pb2 as pb
from rustbill.vault import Vault

TOKEN, SMTP_PW = "tok-4f1d9e2c-very-secret", "smtp-pw-8a7b6c"
CONFIG = {"url": "https://hooks.example.com", "token": TOKEN, "smtp": {"user": "ops", "password": SMTP_PW}}
MASKED = {"url": "https://hooks.example.com", "token": "********", "smtp": {"user": "ops", "password": "********"}}
KEY_A, KEY_B = Vault.new_key(), Vault.new_key()


def _fp(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()[:12]


def start(srv: ServerProcess, **env: str) -> ServerProcess:
    srv.env.update(env)
    return srv.start()


@pytest.fixture
def srv(tmp_path: Path, databases: Databases) -> Any:
    s = ServerProcess(tmp_path, databases.new(), plugins=[TEST_PLUGINS / "t_secret.py"])
    yield s
    s.stop()


def _create(srv: ServerProcess, token: str, config: dict[str, Any]) -> Any:
    stub = srv.stub()
    plugin = next(p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins)
    return stub.CreatePluginInterface(
        pb.CreatePluginInterfaceRequest(
            plugin_def_id=plugin.id, display_name=unique("s"), config_json=json.dumps(config)
        ),
        metadata=md(token),
    ).interface


def _fingerprints(srv: ServerProcess, token: str, iid: str) -> dict[str, Any]:
    reply = srv.stub().CallPluginAction(
        pb.CallPluginActionRequest(interface_id=iid, function="admin_fingerprints", args_json="{}"), metadata=md(token)
    )
    return json.loads(reply.result_json)  # type: ignore[no-any-return]


def _stored(srv: ServerProcess) -> list[str]:
    return [r[0] for r in query_db(srv.db_url, "SELECT config_json FROM plugin_interfaces")]


def test_secrets_are_never_shown_back_and_kept_on_update(srv: ServerProcess) -> None:
    start(srv, RUSTBILL_SECRETS__KEY=KEY_A)
    token = srv.token()
    stub = srv.stub()
    iface = _create(srv, token, CONFIG)
    assert json.loads(iface.config_json) == MASKED
    got = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iface.id), metadata=md(token)).interface
    assert json.loads(got.config_json) == MASKED
    listed = stub.ListPluginInterfaces(pb.ListPluginInterfacesRequest(), metadata=md(token)).interfaces
    assert [json.loads(i.config_json) for i in listed] == [MASKED]
    # The plugin gets the real values.
    assert _fingerprints(srv, token, iface.id) == {
        "token": _fp(TOKEN),
        "smtp_password": _fp(SMTP_PW),
        "url": CONFIG["url"],
    }

    # Update: the token left out, the SMTP password sent as the placeholder: both kept.
    update = {"url": "https://hooks2.example.com", "smtp": {"user": "ops2", "password": "********"}}
    reply = stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json=json.dumps(update)), metadata=md(token)
    ).interface
    assert json.loads(reply.config_json) == {
        **MASKED,
        "url": update["url"],
        "smtp": {"user": "ops2", "password": "********"},
    }
    assert _fingerprints(srv, token, iface.id) == {
        "token": _fp(TOKEN),
        "smtp_password": _fp(SMTP_PW),
        "url": update["url"],
    }
    # A new value replaces it.
    new = {**update, "token": "tok-new-value"}
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(interface_id=iface.id, config_json=json.dumps(new)), metadata=md(token)
    )
    assert _fingerprints(srv, token, iface.id)["token"] == _fp("tok-new-value")
    # The placeholder cannot be a new secret.
    with raises_code(
        grpc.StatusCode.INVALID_ARGUMENT, r"config_json\.token: '\*\*\*\*\*\*\*\*' stands for a stored secret"
    ):
        _create(srv, token, {**CONFIG, "token": "********"})

    # At rest: sealed; no secret in the database, nor in the log.
    stored = _stored(srv)
    assert all("$sealed" in s for s in stored)
    for secret in (TOKEN, SMTP_PW, "tok-new-value"):
        assert not any(secret in s for s in stored)
        assert secret not in srv.log


def test_secrets_stored_in_clear_by_an_older_version_are_sealed_at_start(srv: ServerProcess) -> None:
    start(srv, RUSTBILL_SECRETS__KEY=KEY_A)
    token = srv.token()
    iface = _create(srv, token, CONFIG)
    srv.stop()
    # As an older version wrote it: in clear.
    _write(srv.db_url, iface.id, json.dumps(CONFIG))
    assert any(TOKEN in s for s in _stored(srv))
    start(srv)
    srv.wait_for_log(r"encrypted the stored secrets of 1 interface")
    assert not any(TOKEN in s for s in _stored(srv))
    assert _fingerprints(srv, srv.token(), iface.id)["token"] == _fp(TOKEN)


def test_a_wrong_key_is_said_clearly_and_rotation_keeps_the_secrets(srv: ServerProcess) -> None:
    start(srv, RUSTBILL_SECRETS__KEY=KEY_A)
    iface = _create(srv, srv.token(), CONFIG)
    srv.stop()
    start(srv, RUSTBILL_SECRETS__KEY=KEY_B)
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, r"cannot be decrypted: .*\[secrets\] key"):
        _fingerprints(srv, srv.token(), iface.id)
    health = srv.stub().CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(srv.token()))
    assert not health.is_healthy and re.search(r"cannot be decrypted: .*\[secrets\] key", health.error)
    srv.stop()
    # Rotation: B is the key now, A still decrypts; re-seal everything with B, then A is not needed.
    srv.env.update(RUSTBILL_SECRETS__PREVIOUS_KEYS=json.dumps([KEY_A]))
    out = srv.cli("secrets", "rotate")
    assert "re-encrypted the secrets of 1 interface(s)" in out.stdout
    del srv.env["RUSTBILL_SECRETS__PREVIOUS_KEYS"]
    start(srv)
    assert _fingerprints(srv, srv.token(), iface.id)["token"] == _fp(TOKEN)


def test_without_a_configured_key_one_is_generated_into_the_data_dir(srv: ServerProcess) -> None:
    start(srv)
    srv.wait_for_log(r"generated the secrets key .*secrets\.key: back it up")
    key_file = srv.workdir / "data" / "secrets.key"
    assert key_file.stat().st_mode & 0o077 == 0
    iface = _create(srv, srv.token(), CONFIG)
    srv.stop()
    start(srv)  # the same file, the same key
    assert _fingerprints(srv, srv.token(), iface.id)["token"] == _fp(TOKEN)


def test_a_bad_key_in_the_config_is_refused_at_start(srv: ServerProcess) -> None:
    srv.env.update(RUSTBILL_SECRETS__KEY="not-a-key")
    out = srv.cli("secrets", "rotate", check=False)
    assert out.returncode == 2 and "secrets.key must be 32 url-safe base64-encoded bytes" in out.stderr


def _write(db_url: str, iid: str, config_json: str) -> None:
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from rustbill.config import async_db_url

    async def go() -> None:
        engine = create_async_engine(async_db_url(db_url))
        try:
            async with engine.begin() as conn:
                rows = (await conn.execute(text("SELECT id FROM plugin_interfaces"))).all()
                assert len(rows) == 1
                await conn.execute(text("UPDATE plugin_interfaces SET config_json = :c"), {"c": config_json})
        finally:
            await engine.dispose()

    asyncio.run(go())
