"""The public surface of ws-core changes only on purpose."""

import ws_core
import ws_core.bn
import ws_core.checkpoint
import ws_core.cost
import ws_core.elastic
import ws_core.search


def test_top_level_api():
    assert sorted(ws_core.__all__) == sorted([
        "BNStatistics", "CostModel", "Dimension", "SearchSpace", "SubNet", "SubNetConfig", "SuperNet",
        "load_checkpoint", "pareto_front", "recalibrate_bn", "save_checkpoint",
    ])
    for name in ws_core.__all__:
        assert hasattr(ws_core, name)


def test_module_apis():
    assert set(ws_core.bn.__all__) == {"BNStatistics", "collect_bn_statistics", "recalibrate_bn"}
    assert set(ws_core.cost.__all__) == {"CostModel", "LatencyEntry", "LatencyTable", "count_macs",
                                          "count_params", "input_hw", "profile_latency"}
    assert set(ws_core.search.__all__) == {"AccuracyPredictor", "SearchResult", "evolutionary_search",
                                            "pareto_front", "random_search"}
    assert set(ws_core.checkpoint.__all__) == {"CheckpointError", "atomic_save_safetensors", "load_checkpoint",
                                                "read_checkpoint_metadata", "read_safetensors", "save_checkpoint"}
    assert {"ElasticConv2d", "ElasticDepthwiseConv2d", "ElasticBatchNorm2d", "ElasticLinear",
            "ElasticSqueezeExcite", "ElasticStage", "sort_channels"} <= set(ws_core.elastic.__all__)
