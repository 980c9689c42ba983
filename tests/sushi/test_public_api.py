"""The public surface of ws-sushi changes only on purpose."""

import ws_sushi
import ws_sushi.accel
import ws_sushi.finn
import ws_sushi.quant
import ws_sushi.sched
import ws_sushi.subgraph


def test_top_level_api():
    assert sorted(ws_sushi.__all__) == sorted([
        "AccuracyTable", "CachePolicy", "CandidateCosts", "HardwareProfile", "NoCache", "Phase", "QueryCost",
        "QueryStream", "SimulationResult", "StaticCache", "SubGraph", "SubGraphStationary", "SubNetLayout",
        "SushiAccel", "SushiSystem", "build_system", "common_subgraph", "compare_policies", "fetch_bytes",
        "fit_subgraph", "format_summary", "generate_stream", "layer_macs", "list_profiles", "load_profile",
        "plan_subgraph", "read_trace", "reference_phases", "select_subnet", "select_subnets", "simulate",
        "subnet_layout", "subnet_subgraph", "supernet_subgraph", "uniform_subnets", "write_trace",
    ])
    for name in ws_sushi.__all__:
        assert hasattr(ws_sushi, name)


def test_module_apis():
    assert {"SubGraph", "common_subgraph", "fetch_bytes", "subnet_subgraph"} <= set(ws_sushi.subgraph.__all__)
    assert {"SushiAccel", "CandidateCosts", "layer_macs"} <= set(ws_sushi.accel.__all__)
    assert {"select_subnets", "plan_subgraph", "fit_subgraph", "SubGraphStationary"} <= set(ws_sushi.sched.__all__)
    assert {"quantize_subnet", "export_qonnx", "check_qonnx", "UnsupportedLayerError"} <= set(ws_sushi.quant.__all__)
    assert {"set_folding", "folding_config", "estimate_performance", "read_finn_reports",
            "run_finn_estimate"} <= set(ws_sushi.finn.__all__)
    for module in (ws_sushi.subgraph, ws_sushi.accel, ws_sushi.sched, ws_sushi.quant, ws_sushi.finn):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)

