"""``rustbill plugin new``'s writer in process: where it writes and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from rustbill.plugins.loader import load_plugin
from rustbill.plugins.scaffold import ScaffoldError, new_plugin


def test_a_folder_that_does_not_exist_yet_is_made(tmp_path: Path) -> None:
    path = new_plugin("notifier", "chat_ping", tmp_path / "my" / "plugins")
    assert path == tmp_path / "my" / "plugins" / "chat_ping.py"
    assert load_plugin(path, path.read_bytes(), "chat_ping").meta.plugin_type == "notifier"


def test_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match=r"'Chat-Ping' is not a plugin id"):
        new_plugin("notifier", "Chat-Ping", tmp_path)
    new_plugin("gateway", "pay", tmp_path)
    with pytest.raises(ScaffoldError, match=r"pay\.py exists already"):
        new_plugin("gateway", "pay", tmp_path)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ScaffoldError, match=r"afile is a file, not a folder"):
        new_plugin("gateway", "pay2", tmp_path / "afile")
