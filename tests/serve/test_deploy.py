"""``load_supernet``: a registered SuperNet, or the one a checkpoint was saved from."""

from __future__ import annotations

import pytest
import timm
import torch

from ws_core.checkpoint import CheckpointError, save_checkpoint
from ws_serve.deploy import load_supernet


def test_load_supernet_builds_the_checkpoints_supernet(tmp_path):
    torch.manual_seed(0)
    saved = timm.create_model("ws_ofa_mbv3_035_32", num_classes=7)
    saved.activate(saved.space.min())
    ckpt = save_checkpoint(saved, tmp_path / "net.safetensors")
    for model in (None, "ws_ofa_mbv3_035_32"):
        net = load_supernet(model, ckpt, seed=1)
        assert net.num_classes == 7 and not net.training and net.active == saved.space.min()
        for key, value in saved.state_dict().items():
            torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_load_supernet_checks_the_model_against_the_checkpoint(tmp_path):
    ckpt = save_checkpoint(timm.create_model("ws_ofa_mbv3_035_32", num_classes=10), tmp_path / "net.safetensors")
    with pytest.raises(CheckpointError, match="a checkpoint of 'ws_ofa_mbv3_035_32', not of the model "
                                              "'ws_ofa_resnet50_025_32'"):
        load_supernet("ws_ofa_resnet50_025_32", ckpt)
    with pytest.raises(ValueError, match=r"model must be one of \[.*\], got 'resnet18'"):
        load_supernet("resnet18", ckpt)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_supernet(None, tmp_path / "missing.safetensors")


def test_deploy_names_the_latency_sources():
    from ws_serve.deploy import LATENCY_SOURCES, deploy

    assert LATENCY_SOURCES == ("measured", "predicted")
    with pytest.raises(ValueError, match=r"latency must be one of \['measured', 'predicted'\], got 'guessed'"):
        deploy("ws_ofa_mbv3_035_32", latency="guessed")
    with pytest.raises(ValueError, match="latency_anchors must be >= 0, got -2"):
        deploy("ws_ofa_mbv3_035_32", latency="predicted", latency_anchors=-2)


def test_deploy_profiles_with_the_backend_options_the_workers_get(tmp_path, monkeypatch):
    import importlib

    from ws_serve.backends import OnnxRuntimeBackend

    deploy_module = importlib.import_module("ws_serve.deploy")  # the package's ``deploy`` is the function

    monkeypatch.setenv("WS_SERVE_CACHE_DIR", str(tmp_path))
    made = []
    real = deploy_module.make_backend

    def spy(name, act, **kwargs):
        made.append(real(name, act, **kwargs))
        return made[-1]

    monkeypatch.setattr(deploy_module, "make_backend", spy)
    dep = deploy_module.deploy("ws_ofa_mbv3_035_32", subnets=2, max_batch=1, profile_warmup=0, profile_repeats=1,
                               profile_rounds=1, backend="onnxruntime",
                               backend_options={"threads": 1, "spinning": "off"})
    assert len(made) == 1 and isinstance(made[0], OnnxRuntimeBackend)
    assert made[0].spinning == "off" and set(made[0].threads_by_subnet().values()) == {1}
    assert len(dep.profile.subnet_ids) == 2
