"""ws-sushi sizes the SubGraphs of the elastic ViT through ws-core's ``weight_slices``."""

from __future__ import annotations

import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core import CostModel
from ws_sushi.subgraph import common_subgraph, fetch_bytes, subnet_subgraph, supernet_subgraph


def test_vit_subgraphs_nest_and_size_like_the_subnets():
    torch.manual_seed(0)
    net = timm.create_model("ws_vit_nano_patch4_28", num_classes=10)
    space, costs = net.space, CostModel(net)
    g = torch.Generator().manual_seed(0)
    configs = [space.min(), space.max(), *(space.sample(g) for _ in range(3))]
    graphs = [subnet_subgraph(net, cfg) for cfg in configs]
    small, large = graphs[0], graphs[1]
    # a ViT has no buffers: a SubNet's SubGraph holds exactly its parameters
    for cfg, graph in zip(configs, graphs):
        assert graph.numel() == costs.params(cfg)
        assert graph.nbytes(bits=32) == 4 * costs.params(cfg)
    assert large == supernet_subgraph(net)  # the max SubNet reads every tensor whole
    # leading heads / neurons / channels and the first blocks: the min SubNet is common to all of them
    assert all(small.issubset(graph) for graph in graphs)
    assert common_subgraph(graphs) == small
    # min: embed 32 of 64, 2 heads of 4 (rows 32 of 64 in q_proj), MLP ratio 2 (hidden 64 of 256), 4 blocks of 6
    assert small["stages.0.blocks.0.attn.q_proj.weight"] == (slice(0, 32), slice(0, 32))
    assert small["stages.0.blocks.0.mlp.fc1.weight"] == (slice(0, 64), slice(0, 32))
    assert small["stem.pos.pos_embed"] == (slice(0, 1), slice(0, 50), slice(0, 32))
    assert not any(k.startswith("stages.0.blocks.4.") for k in small)
    assert fetch_bytes(large, cached=small, bits=8) == large.nbytes(8) - small.nbytes(8)
    assert fetch_bytes(large, cached=large, bits=8) == 0
