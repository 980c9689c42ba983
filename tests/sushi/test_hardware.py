"""Hardware profiles: built-ins, JSON files, validation."""

from __future__ import annotations

import json

import pytest

from ws_sushi.hardware import HardwareProfile, list_profiles, load_profile


def test_builtin_profiles_are_documented_models():
    assert list_profiles() == ["mcu_m7", "zcu104"]
    fpga = load_profile("zcu104")
    assert fpga.kind == "fpga" and fpga.overlap_fetch
    assert fpga.macs_per_second == pytest.approx(200e6 * 1296 * 0.6)
    assert fpga.weight_buffer_bytes == 64 * 36 * 1024  # 64 UltraRAM blocks of 288 Kb
    mcu = load_profile("mcu_m7")
    assert mcu.kind == "mcu" and not mcu.overlap_fetch
    assert mcu.weight_buffer_bytes == 256 * 1024
    for p in (fpga, mcu):
        assert p.sources and p.assumptions
        assert HardwareProfile.from_dict(p.to_dict()) == p


def test_unknown_profile():
    with pytest.raises(ValueError, match=r"unknown hardware profile 'zcu999'; built-in profiles are \['mcu_m7', "):
        load_profile("zcu999")
    with pytest.raises(ValueError, match="does not exist"):
        load_profile("/nonexistent/board.json")


def test_profile_from_file(tmp_path):
    d = load_profile("zcu104").to_dict()
    d.update(name="zcu104-fast", offchip_bandwidth_bytes_per_s=10e9)
    path = tmp_path / "board.json"
    path.write_text(json.dumps(d))
    p = load_profile(path)
    assert p.name == "zcu104-fast" and p.offchip_bandwidth_bytes_per_s == 10e9
    load_profile("zcu104").replace(name="x").save(tmp_path / "x.json")
    assert load_profile(str(tmp_path / "x.json")).name == "x"


@pytest.mark.parametrize(("change", "message"), [
    ({"mac_utilization": 1.5}, r"mac_utilization must be in \(0, 1\], got 1.5"),
    ({"clock_hz": 0}, "clock_hz must be a finite number > 0, got 0"),
    ({"weight_buffer_bytes": -1}, "weight_buffer_bytes must be an int >= 0, got -1"),
    ({"energy_pj_per_offchip_byte": -2.0}, "energy_pj_per_offchip_byte must be a finite number >= 0"),
    ({"weight_bits": 0}, r"weight_bits must be an int in \[1, 32\]"),
    ({"overlap_fetch": "yes"}, "overlap_fetch must be true or false"),
])
def test_profile_validation(change, message):
    with pytest.raises(ValueError, match=message):
        load_profile("zcu104").replace(**change)


def test_profile_keys_are_checked():
    d = load_profile("mcu_m7").to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['dram_gb'\]"):
        HardwareProfile.from_dict({**d, "dram_gb": 2})
    del d["clock_hz"]
    with pytest.raises(ValueError, match=r"missing keys \['clock_hz'\]"):
        HardwareProfile.from_dict(d)
