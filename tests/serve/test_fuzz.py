"""Hostile input over HTTP and gRPC: no 5xx, no dropped connection, every error body ``{"error": str}``."""

from __future__ import annotations

import pytest

from ws_serve.deploy import build_app, make_local_workers
from ws_serve.hostile import check_http_response, fuzz_http, hostile_http_requests

MODEL = "ws_ofa_mbv3_035_32"


@pytest.fixture(scope="module")
def live(deployment, serve_in_thread):
    """HTTP (and gRPC, when tritonclient[grpc] is installed) on free loopback ports: ``(http, grpc)``."""
    workers = make_local_workers(deployment, workers=1)
    app, _ = build_app(deployment, workers, "slackfit", default_slo_ms=10_000, max_body_bytes=64 * 1024,
                        overhead_ms=0.0)
    try:
        from ws_serve.grpc_server import add_grpc_endpoint
    except ImportError:  # pragma: no cover - without the grpc extra
        endpoint = None
    else:
        endpoint = add_grpc_endpoint(app, "127.0.0.1", 0, grace_s=1)
    with serve_in_thread(app) as address:
        yield f"http://{address}", None if endpoint is None else endpoint.address


def test_hostile_http_requests_get_4xx_in_the_protocol_form(live):
    url, _ = live
    requests = hostile_http_requests(150, seed=0, model=MODEL, sample_shape=(3, 32, 32), max_batch=4)
    assert len({r.kind for r in requests}) == 12           # every kind is covered
    report = fuzz_http(url, requests)
    assert report.violations == []
    statuses = report.statuses
    assert all(isinstance(s, int) and s < 500 for s in statuses), statuses
    assert statuses[200] >= sum(n for (kind, _), n in report.counts.items() if kind == "valid")
    assert {400, 404, 405, 413} <= set(statuses), statuses
    assert report.counts[("non_finite", 400)] == sum(n for (k, _), n in report.counts.items() if k == "non_finite")


def test_hostile_grpc_requests_get_invalid_argument_not_internal(live):
    hostile = pytest.importorskip("ws_serve.hostile")
    pytest.importorskip("tritonclient.grpc")
    _, address = live
    requests = hostile.hostile_grpc_requests(40, seed=0, model=MODEL, sample_shape=(3, 32, 32), max_batch=4)
    report = hostile.fuzz_grpc(address, requests)
    assert report.violations == []
    assert report.statuses["OK"] >= 1 and report.statuses["INVALID_ARGUMENT"] >= 20, report.statuses


def test_the_checks_catch_what_they_should():
    ok = {"inference-header-content-length": "2"}
    assert check_http_response(200, {}, b'{"a":1}') is None
    assert "status 500" in check_http_response(500, {}, b'{"error":"x"}')
    assert "not strict JSON" in check_http_response(400, {}, b'{"error": NaN}')
    assert "not {'error': str}" in check_http_response(404, {}, b'{"detail":"Not Found"}')
    assert "invalid body" in check_http_response(200, {}, b'{"outputs": [NaN]}')
    assert "invalid body" in check_http_response(200, ok, b"{}")
