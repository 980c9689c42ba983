from __future__ import annotations

import pytest
import timm
import torch

from ws_core.checkpoint import (
    CheckpointError,
    create_from_checkpoint,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)


def _snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_untouched(net, snapshot):
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in snapshot.items())


@pytest.fixture
def saved(tiny_mbv3, tmp_path):
    net = tiny_mbv3.eval()
    cfg = net.space.sample(torch.Generator().manual_seed(1))
    net.activate(cfg)
    path = save_checkpoint(net, tmp_path / "ckpt" / "supernet.safetensors", extra={"epochs": 3})
    return net, cfg, path


def test_round_trip_restores_weights_active_subnet_and_metadata(saved):
    net, cfg, path = saved
    assert [p.name for p in path.parent.iterdir()] == ["supernet.safetensors"]  # no temporary files left
    torch.manual_seed(99)
    other = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10).eval()
    meta = load_checkpoint(other, path)
    assert meta["architecture"] == "ws_ofa_mbv3_035_32" and meta["extra"] == {"epochs": 3}
    assert meta["space"] == net.space and meta["active"] == cfg
    assert other.active == cfg
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x), net(x), atol=0, rtol=0)
    assert read_checkpoint_metadata(path)["num_classes"] == 10


def test_timm_pretrained_cfg_overlay_loads_a_checkpoint(saved):
    net, _, path = saved
    loaded = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    loaded.activate(net.active)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), atol=0, rtol=0)
    # a different class count: timm drops the classifier and loads the rest (fine-tuning)
    other = timm.create_model("ws_ofa_mbv3_035_32", num_classes=3, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)))
    torch.testing.assert_close(other.stem.conv.conv.weight, net.stem.conv.conv.weight)
    # timm's own loader path via our load_pretrained
    custom = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path), custom_load=True)).eval()
    assert custom.active == net.active


def test_corrupt_file_fails_clearly_and_leaves_model_untouched(saved, tmp_path):
    _, _, path = saved
    data = path.read_bytes()
    victim = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    snapshot, active = _snapshot(victim), victim.active
    for name, content in [("garbage.safetensors", b"\x00" * 64), ("truncated.safetensors", data[: len(data) // 2])]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable safetensors file"):
            load_checkpoint(victim, bad)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(victim, tmp_path / "missing.safetensors")
    _assert_untouched(victim, snapshot)
    assert victim.active == active


def test_mismatched_checkpoints_fail_clearly_and_leave_model_untouched(saved, tmp_path):
    _, _, path = saved
    wrong_classes = timm.create_model("ws_ofa_mbv3_035_32", num_classes=5)
    snapshot = _snapshot(wrong_classes)
    with pytest.raises(CheckpointError, match=r"head.classifier.weight: checkpoint shape \(10, 448\) != model shape"):
        load_checkpoint(wrong_classes, path)
    _assert_untouched(wrong_classes, snapshot)

    other_space = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10, kernel_sizes=(3, 5))
    snapshot = _snapshot(other_space)
    with pytest.raises(CheckpointError, match="search space differs"):
        load_checkpoint(other_space, path)
    _assert_untouched(other_space, snapshot)

    resnet = timm.create_model("ws_ofa_resnet50_025_32", num_classes=10)
    snapshot = _snapshot(resnet)
    with pytest.raises(CheckpointError):
        load_checkpoint(resnet, path)
    _assert_untouched(resnet, snapshot)

    # a plain safetensors file that is not a weightshare checkpoint
    from safetensors.torch import save_file
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a weightshare SuperNet checkpoint"):
        load_checkpoint(resnet, plain)


def test_load_state_dict_checks_everything_before_copying(tiny_mbv3):
    net = tiny_mbv3
    snapshot = _snapshot(net)
    state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    state["head.classifier.weight"] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="model left unchanged"):
        net.load_state_dict(state)
    _assert_untouched(net, snapshot)
    del state["head.classifier.weight"]
    with pytest.raises(RuntimeError, match="missing keys"):
        net.load_state_dict(state)
    _assert_untouched(net, snapshot)
    result = net.load_state_dict(state, strict=False)  # non-strict: loads what fits
    assert result.missing_keys == ["head.classifier.weight"]


def test_create_from_checkpoint_builds_the_saved_supernet(saved):
    net, cfg, path = saved
    again = create_from_checkpoint(path)
    assert type(again) is type(net) and again.space == net.space and again.active == cfg
    state = again.state_dict()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_create_from_checkpoint_names_what_is_registered(tmp_path):
    from safetensors.torch import save_file

    from ws_core.checkpoint import FORMAT

    path = tmp_path / "odd.safetensors"
    net = timm.create_model("ws_ofa_mbv3_035_32")
    save_file({"x": torch.zeros(1)}, str(path), metadata={
        "format": FORMAT, "architecture": "ws_not_a_model", "num_classes": "10",
        "space": net.space.to_json(), "active": net.active.to_json(), "extra": "{}"})
    with pytest.raises(CheckpointError, match=r"architecture 'ws_not_a_model' is not a registered SuperNet "
                                              r"\(registered: \[.*'ws_ofa_mbv3_035_32'"):
        create_from_checkpoint(path)


def test_checkpoints_get_the_permissions_of_the_umask(tmp_path, tiny_mbv3):
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tiny_mbv3, tmp_path / "net.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
