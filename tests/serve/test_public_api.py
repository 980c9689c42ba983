from __future__ import annotations

import importlib

import ws_serve

MODULES = ["backends", "calibration", "cli", "deploy", "grpc_server", "hostile", "launch", "loadgen", "metrics",
           "policies", "profile", "ray_worker", "runtime", "server", "simulator", "subnetact", "traces"]


def test_public_surface_is_pinned():
    assert sorted(ws_serve.__all__) == sorted([
        "BACKENDS", "POLICIES", "Backend", "CUDAGraphBackend", "CompileBackend", "DeadlineExceeded", "Decision",
        "DeploySpec", "Deployment", "EagerBackend", "FixedSubNet", "InferenceResult", "LayerSelect",
        "LocalWorker", "MaxAcc", "MaxBatch", "MinCost", "ModelInfo", "OnnxRuntimeBackend", "Overloaded", "Policy",
        "Profile",
        "QueueState", "ReplayReport", "RequestRecord", "Router", "ServeError", "ServeMetrics", "ServedSet",
        "ServedSubNet",
        "SimulationResult", "SlackFit", "SlackFitPaper", "SubNetAct", "SubnetNorm", "TensorRTBackend", "Trace",
        "WeightSlice",
        "Worker", "WorkerDied", "build_app", "bursty_trace", "create_app", "deploy", "load_subnet_norm",
        "load_supernet", "maf_trace", "make_local_workers", "make_policy", "pareto_served_set", "profile_served",
        "read_maf_invocations", "recalibrated_statistics", "replay", "replay_sync", "save_served_set",
        "save_subnet_norm",
        "simulate", "slackfit_buckets", "superserve_paper_profile", "time_varying_trace",
    ])
    for name in ws_serve.__all__:
        assert hasattr(ws_serve, name), name


def test_every_module_declares_all():
    for name in MODULES:
        module = importlib.import_module(f"ws_serve.{name}")
        assert module.__doc__, name
        for symbol in module.__all__:
            assert hasattr(module, symbol), f"ws_serve.{name}.{symbol}"
