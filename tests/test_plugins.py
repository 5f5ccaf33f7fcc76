"""The one-line errors of plugins that fail to load (`dgalign.plugins`)."""

import importlib.metadata
from types import SimpleNamespace

import pytest

from dgalign import plugins
from dgalign.errors import ConfigError


@pytest.fixture(autouse=True)
def _fresh_plugin_state(monkeypatch):
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "_entry_points_done", False)


def _load_file(tmp_path, name, code):
    path = tmp_path / name
    path.write_text(code)
    plugins.load_plugins([str(path)], environ=False, entry_points=False)


def test_a_module_that_fails_to_import_names_itself_the_reason_and_the_fix(tmp_path):
    with pytest.raises(plugins.PluginError) as info:
        _load_file(tmp_path, "dgalign_t_bad.py", "raise ValueError('boom\\nmore')\n")
    path = str((tmp_path / "dgalign_t_bad.py").resolve())
    assert str(info.value) == (
        f"plugin {path!r} (--plugin) failed to import (ValueError: boom); check the module "
        "name or path and that it imports on its own"
    )


def test_a_config_error_keeps_its_own_message(tmp_path):
    code = "from dgalign.errors import ConfigError\nraise ConfigError('bad hparam')\n"
    with pytest.raises(plugins.PluginError, match=r"\(--plugin\): bad hparam$"):
        _load_file(tmp_path, "dgalign_t_config.py", code)


def test_ctrl_c_while_importing_is_not_turned_into_a_plugin_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _load_file(tmp_path, "dgalign_t_interrupt.py", "raise KeyboardInterrupt\n")


def _entry_point(load):
    dist = SimpleNamespace(name="lab-dg", version="1.0")
    return SimpleNamespace(name="lab", value="lab_dg:setup", dist=dist, load=load)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            ImportError("no lab_dg"),
            "plugin lab = lab_dg:setup from lab-dg (entry point) failed to load (ImportError: "
            "no lab_dg); fix or uninstall that package",
        ),
        (
            ConfigError("cannot register"),
            "plugin lab = lab_dg:setup from lab-dg (entry point): cannot register",
        ),
    ],
)
def test_a_failing_entry_point_names_its_distribution(monkeypatch, error, message):
    def load():
        raise error

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [_entry_point(load)])
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_plugins([], environ=False)
    assert str(info.value) == message
