from __future__ import annotations

import ws_nas


def test_public_surface_is_pinned():
    assert sorted(ws_nas.__all__) == sorted([
        "PRIMITIVES", "CellPrecision", "CellSuperNet", "CostReport", "DARTSNetwork", "Genotype",
        "ImageClassificationData", "MixedQuantConv2d", "NablaQDARTS", "QuantConv2d", "RetrainModule",
        "SearchModule", "cost_report", "derive_genotype", "export_qonnx", "post_training_quantize",
        "quantize_activation", "quantize_weight", "to_brevitas",
    ])
    for name in ws_nas.__all__:
        assert getattr(ws_nas, name) is not None


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("ws-nas") == "ws_nas.cli:main"
