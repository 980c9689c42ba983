"""An extracted SubNet exports to ONNX (TorchScript exporter) and ONNX Runtime computes what torch does.

The README's "Export a SubNet to ONNX" recipe, on the smallest SuperNet; the model stays in memory.
"""

from __future__ import annotations

import io
import warnings

import pytest
import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)

ort = pytest.importorskip("onnxruntime")


def test_subnet_onnx_export_matches_torch():
    torch.manual_seed(0)
    net = timm.create_model("ws_ofa_mbv3_035_32", num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics, so folding them into the convs is checked too
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    cfg = net.space.sample(torch.Generator().manual_seed(0))
    sub = net.extract(cfg).eval()

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
        torch.onnx.export(sub, (torch.zeros(1, 3, 32, 32),), buf, dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # another batch size: dynamic axis
    (logits,) = session.run(["logits"], {"image": x.numpy()})
    with torch.no_grad():
        expected = sub(x)
    assert expected.abs().max() > 1e-2  # logits large enough for atol=1e-5 to mean something
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-5, rtol=0)
