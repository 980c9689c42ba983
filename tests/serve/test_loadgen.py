from __future__ import annotations

import json

import numpy as np
import pytest

from ws_serve.deploy import build_app, make_local_workers
from ws_serve.loadgen import ReplayReport, RequestRecord, encode_infer_request, replay_sync
from ws_serve.server import parse_infer_request
from ws_serve.traces import Trace, bursty_trace


def test_encoded_requests_parse_on_the_server(deployment):
    x = np.ones((1, 3, 32, 32), np.float32)
    body, header = encode_infer_request(x, slo_ms=25)
    parsed = parse_infer_request(body, header, deployment.model)
    assert parsed.slo_ms == 25 and parsed.binary_output and parsed.inputs.shape == (1, 3, 32, 32)
    assert json.loads(body[:header])["inputs"][0]["parameters"]["binary_data_size"] == x.nbytes


def test_open_loop_replay_measures_attainment_and_accuracy(deployment, serve_in_thread):
    workers = make_local_workers(deployment, workers=1)
    app, _ = build_app(deployment, workers, "slackfit", max_queue=8)
    # 30 queries over 1.5 s, SLO 5 s: all are served in time on the tiny SuperNet
    calm = Trace(np.linspace(0, 1.5, 30))
    # then a burst with an SLO of 10 us, below every SubNet's profiled latency: each query is refused
    burst = bursty_trace(base_rate=0, variant_rate=400, cv2=8, duration_s=0.5, seed=0)
    with serve_in_thread(app) as address:
        ok = replay_sync(f"http://{address}", deployment.model.name, calm, slo_ms=5000)
        hard = replay_sync(f"http://{address}", deployment.model.name, burst, slo_ms=0.01)
    assert ok.sent == 30 and ok.ok == 30 and ok.slo_attainment == 1.0
    accuracies = {s.id: s.accuracy for s in deployment.served}
    assert min(accuracies.values()) <= ok.mean_accuracy <= max(accuracies.values())
    assert set(ok.subnets) <= set(accuracies)
    assert sum(ok.statuses.values()) == 30
    assert hard.sent == len(burst) and dict(hard.statuses) == {504: len(burst)}  # one answer per request
    assert hard.ok == hard.met_slo == 0 and hard.slo_attainment == 0.0
    assert len(ok.records) == 30 and sorted(r.at_s for r in ok.records) == calm.arrivals.tolist()
    assert all(r.met(5000) and r.subnet_id in accuracies for r in ok.records)
    assert len(hard.records) == hard.sent and not any(r.ok or r.met(0.01) for r in hard.records)
    report = hard.to_dict()
    assert report["sent"] == hard.sent and report["slo_attainment"] == 0.0 and report["met_slo"] == 0


def test_timeline_bins_attainment_and_served_accuracy_by_due_time():
    report = ReplayReport(5, 2, 3, 1.6, 2.5, slo_ms=100.0, records=[
        RequestRecord(0.1, 200, 50.0, 0.7, "a"),      # bin 0: met
        RequestRecord(0.9, 200, 150.0, 0.9, "b"),     # bin 0: served late
        RequestRecord(1.2, 504, 3.0),                 # bin 1: deadline error
        RequestRecord(2.0, 200, 99.0, 0.9, "b"),      # bin 2: met
        RequestRecord(2.5, "ConnectError"),           # bin 2: transport failure
    ])
    t = report.timeline(1.0)
    assert t["t_s"] == [0.0, 1.0, 2.0] and t["sent"] == [2, 1, 2]
    assert t["slo_attainment"] == [0.5, 0.0, 0.5]
    assert t["accuracy"][0] == 0.7 and t["accuracy"][2] == 0.9 and t["accuracy"][1] != t["accuracy"][1]
    assert report.timeline(2.0)["slo_attainment"] == [1 / 3, 0.5]
    assert ReplayReport(0, 0, 0, 0.0, 0.0).timeline() == {"t_s": [], "sent": [], "slo_attainment": [], "accuracy": []}


def test_replay_over_grpc_reports_what_the_server_answered(deployment, serve_in_thread):
    from ws_serve.grpc_server import add_grpc_endpoint

    workers = make_local_workers(deployment, workers=1)
    app, _ = build_app(deployment, workers, "slackfit", max_queue=8)
    endpoint = add_grpc_endpoint(app, "127.0.0.1", 0, grace_s=1)
    calm = Trace(np.linspace(0, 1.0, 20))
    burst = bursty_trace(base_rate=0, variant_rate=400, cv2=8, duration_s=0.5, seed=0)
    with serve_in_thread(app):
        ok = replay_sync(endpoint.address, deployment.model.name, calm, slo_ms=5000, transport="grpc")
        # an SLO of 10 us is below every SubNet's profiled latency: each query is refused as late
        hard = replay_sync(endpoint.address, deployment.model.name, burst, slo_ms=0.01, transport="grpc")
    accuracies = {s.id: s.accuracy for s in deployment.served}
    assert ok.sent == 20 and ok.ok == 20 and ok.slo_attainment == 1.0 and ok.statuses == {"OK": 20}
    assert all(r.ok and r.met(5000) and r.subnet_id in accuracies for r in ok.records)
    assert min(accuracies.values()) <= ok.mean_accuracy <= max(accuracies.values())
    # every query gets one answer, and the refusals come back as gRPC status names, counted as misses
    assert hard.sent == len(burst) and dict(hard.statuses) == {"DEADLINE_EXCEEDED": len(burst)}
    assert hard.ok == hard.met_slo == 0 and hard.slo_attainment == 0.0
    assert not any(r.ok or r.met(0.01) for r in hard.records)


def test_replay_rejects_an_unknown_transport():
    with pytest.raises(ValueError, match=r"transport must be one of \('http', 'grpc'\), got 'udp'"):
        replay_sync("127.0.0.1:1", "m", [0.0], transport="udp")
