"""``ws-sushi simulate`` and ``ws-sushi export``, run in-process."""

from __future__ import annotations

import json

import pytest
import timm

from ws_sushi.accuracy import AccuracyTable
from ws_sushi.cli import main

SMALL = ["--model", "ws_ofa_mbv3_035_32", "--hardware", "mcu_m7", "--bits", "4"]


def test_simulate_reference_stream(tmp_path, capsys):
    out = tmp_path / "summary.json"
    trace = tmp_path / "stream.csv"
    rc = main(["simulate", *SMALL, "--phase-seconds", "3", "--objective", "latency", "--json", str(out),
               "--save-trace", str(trace), "--period", "4", "--window", "16"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "log-MACs proxy accuracy" in text and "27 candidate SubNets" in text
    for name in ("no-cache", "static", "sgs"):
        assert name in text
    summary = json.loads(out.read_text())
    assert summary["hardware"] == "mcu_m7" and summary["bits"] == 4 and summary["accuracy_source"] == "proxy"
    pol = summary["policies"]
    assert pol["sgs"]["offchip_energy_mj"] < pol["no-cache"]["offchip_energy_mj"]
    assert pol["static"]["offchip_energy_mj"] < pol["no-cache"]["offchip_energy_mj"]
    assert trace.is_file() and summary["queries"] == len(trace.read_text().splitlines()) - 1


def test_simulate_trace_and_accuracy_table(tmp_path, capsys, tiny_mbv3):
    net = tiny_mbv3
    table = AccuracyTable([net.space.min(), net.space.max()], [0.61, 0.68], source="measured")
    table.save(tmp_path / "acc.json")
    (tmp_path / "trace.csv").write_text("arrival_s,slo_ms\n0.0,200\n0.05,30\n0.5,200\n")
    rc = main(["simulate", *SMALL, "--accuracy", str(tmp_path / "acc.json"), "--trace", str(tmp_path / "trace.csv"),
               "--policies", "no-cache,sgs", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    assert "2 candidate SubNets" in capsys.readouterr().out
    pol = json.loads((tmp_path / "s.json").read_text())["policies"]
    assert set(pol) == {"no-cache", "sgs"} and pol["sgs"]["queries"] == 3
    assert 0.61 <= pol["no-cache"]["served_accuracy"] <= 0.68


@pytest.mark.parametrize(("args", "message"), [
    (["--hardware", "zcu999"], "unknown hardware profile 'zcu999'"),
    (["--model", "ws_ofa_mbv3_035_32", "--hardware", "zcu104"], "is larger than the whole SuperNet"),
    (["--model", "ws_ofa_mbv3_035_32", "--hardware", "mcu_m7", "--cache-bytes", "10000000"],
     "is larger than the whole SuperNet"),
    ([*SMALL, "--policies", "lru"], "--policies allows"),
    (["--model", "resnet18"], "not a ws-core SuperNet"),
])
def test_simulate_bad_input(args, message, capsys):
    assert main(["simulate", *args]) == 2
    assert message in capsys.readouterr().err


def test_simulate_subnet_outside_the_supernet(tmp_path, capsys, tiny_mbv3):
    bad = tiny_mbv3.space.max().to_dict()
    bad["expand"] = [8] * len(bad["expand"])
    (tmp_path / "acc.json").write_text(json.dumps(
        {"entries": [{"config": bad, "accuracy": 0.7}], "source": "measured"}))
    assert main(["simulate", *SMALL, "--accuracy", str(tmp_path / "acc.json")]) == 2
    err = capsys.readouterr().err
    assert "outside the SuperNet" in err and "'expand'" in err


def test_export_bad_input(tmp_path, capsys):
    assert main(["export", "--subnet", '{"depth": [9, 9, 9, 9, 9]}', "--out", str(tmp_path / "m.onnx")]) == 2
    assert "outside the SuperNet" in capsys.readouterr().err
    assert main(["export", "--subnet", "biggest", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--subnet must be 'min', 'max'" in capsys.readouterr().err
    from ws_sushi.finn import finn_available

    if not finn_available():
        assert main(["export", "--out", str(tmp_path / "m.onnx"), "--finn-build", str(tmp_path / "b")]) == 2
        assert "needs the FINN compiler" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_export_writes_qonnx_and_folding(tmp_path, capsys):
    rc = main(["export", "--model", "ws_ofa_resnet50_025_32", "--subnet", "min", "--weight-bits", "4",
               "--out", str(tmp_path / "sub.onnx"), "--folding", str(tmp_path / "folding.json"),
               "--target-fps", "500", "--calibration-batches", "2", "--recalibrate-bn"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "qonnx execution vs PyTorch: max |diff|" in text and "FINN-style estimate" in text
    assert "outputs are almost zero" not in text  # BN recalibrated: a meaningful comparison
    folding = json.loads((tmp_path / "folding.json").read_text())
    assert folding["Defaults"] == {} and all(k.startswith("MVAU_hls_") for k in folding if k != "Defaults")
    assert (tmp_path / "sub.onnx").stat().st_size > 0




def test_without_a_command_argparse_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2 and "simulate" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["simulate", "export"])
def test_unknown_model_names_the_registered_ones(command, tmp_path, capsys):
    rc = main([command, "--model", "ws_ofa_mbv3_999", *(["--out", str(tmp_path / "m.onnx")] * (command == "export"))])
    assert rc == 2
    registered = ", ".join(timm.list_models("ws_*"))
    assert f"unknown model 'ws_ofa_mbv3_999' (registered: {registered})" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_checkpoint_builds_its_supernet_and_refuses_another_model(tmp_path, capsys, tiny_mbv3):
    import torch

    from ws_core.checkpoint import save_checkpoint
    from ws_sushi.cli import _create_net, build_parser

    ckpt = str(save_checkpoint(tiny_mbv3, tmp_path / "net.safetensors"))
    net = _create_net(build_parser().parse_args(["simulate", *SMALL, "--checkpoint", ckpt]))
    assert not net.training and net.active == tiny_mbv3.active
    for key, value in tiny_mbv3.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert main(["simulate", "--model", "ws_ofa_resnet50_025_32", "--checkpoint", ckpt]) == 2
    assert (f"{ckpt}: a checkpoint of 'ws_ofa_mbv3_035_32', not of --model 'ws_ofa_resnet50_025_32' "
            "(pass --model ws_ofa_mbv3_035_32)") in capsys.readouterr().err


def test_simulate_with_measured_block_latencies(tmp_path, capsys):
    """Compute from a per-block latency table: this CPU's table is filled here and saved; another device's
    table must already hold every block."""
    from ws_core.latency import device_key

    path = tmp_path / "blocks.json"
    acc = tmp_path / "acc.json"
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    AccuracyTable([net.space.min(), net.space.max()], [0.61, 0.68], source="measured").save(acc)
    (tmp_path / "trace.csv").write_text("arrival_s,slo_ms\n0.0,200\n0.5,200\n")
    args = ["simulate", *SMALL, "--accuracy", str(acc), "--trace", str(tmp_path / "trace.csv"),
            "--policies", "no-cache", "--block-latency-table", str(path)]
    assert main(args) == 0
    assert "compute: measured per-block latencies" in capsys.readouterr().out
    tables = json.loads(path.read_text())
    here = device_key("cpu")
    assert list(tables) == [here] and len(tables[here]["entries"]) > 10
    # the same table under another device's name: read, never timed (it holds every block already)
    tables["fpga:zcu104"] = tables[here]
    path.write_text(json.dumps(tables))
    assert main([*args, "--block-latency-device", "fpga:zcu104"]) == 0
    out = capsys.readouterr().out
    assert f"(fpga:zcu104, {len(tables[here]['entries'])} blocks, 0 timed now)" in out
    # a device the file lacks, or blocks it lacks, are errors naming what is missing
    assert main([*args, "--block-latency-device", "mcu:m7"]) == 2
    assert "has no block-latency table for device 'mcu:m7'" in capsys.readouterr().err
    tables["fpga:zcu104"]["entries"] = {}
    path.write_text(json.dumps(tables))
    assert main([*args, "--block-latency-device", "fpga:zcu104"]) == 2
    assert "were never measured at batch 1" in capsys.readouterr().err
    assert main(["simulate", *SMALL, "--block-latency-device", "fpga:zcu104"]) == 2
    assert "--block-latency-device needs --block-latency-table" in capsys.readouterr().err
