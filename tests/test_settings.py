"""Settings: each environment variable has one reader, with one rule."""

import pytest

from lab import settings
from lab.errors import SettingsError


@pytest.mark.parametrize("value, parsed", [("", None), ("kvm", "kvm"), ("TCG", "tcg"), ("qemu", "tcg")])
def test_accel_override(monkeypatch, value, parsed):
    monkeypatch.setenv("IKEDLAB_ACCEL", value)
    assert settings.forced_accel() == parsed


def test_a_bad_accel_is_one_line(monkeypatch):
    monkeypatch.setenv("IKEDLAB_ACCEL", "fast")
    with pytest.raises(SettingsError, match="^IKEDLAB_ACCEL=fast: expected kvm or tcg$"):
        settings.forced_accel()


def test_defaults_and_overrides(monkeypatch, tmp_path):
    for name in ("IKEDLAB_PLATFORM", "IKEDLAB_NAME", "IKEDLAB_LIBVIRT_URI", "IKEDLAB_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert settings.platform() == settings.PLATFORM
    assert settings.platform(settings.SCENARIO_PLATFORM) == settings.SCENARIO_PLATFORM
    assert settings.lab_name() == "default"
    assert settings.libvirt_uri() == "qemu:///system"
    assert settings.state_dir() == tmp_path / "ikedlab"
    monkeypatch.setenv("IKEDLAB_PLATFORM", "linux")
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "s"))
    assert settings.platform() == "linux" and settings.state_dir() == tmp_path / "s"
