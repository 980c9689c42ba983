from __future__ import annotations

import json

import pytest
import torch

from ws_nas import CellSuperNet, Genotype, derive_genotype
from ws_nas.genotype import derive_cell, edge_weights, num_edges

OPS = ("none", "max_pool_3x3", "sep_conv_3x3", "skip_connect")


def test_num_edges():
    assert [num_edges(s) for s in (1, 2, 4)] == [2, 5, 14]


def test_derive_cell_on_fixed_weights():
    # 2 nodes -> edges: node 0 <- {0, 1} (rows 0, 1); node 1 <- {0, 1, 2} (rows 2, 3, 4).
    W = torch.tensor([
        [0.10, 0.20, 0.60, 0.10],   # node 0, input 0: sep_conv (0.6)
        [0.90, 0.02, 0.03, 0.05],   # node 0, input 1: 'none' is largest -> strongest real op skip (0.05)
        [0.00, 0.70, 0.20, 0.10],   # node 1, input 0: max_pool (0.7)
        [0.10, 0.10, 0.10, 0.70],   # node 1, input 1: skip (0.7): ties with row 2 -> lower input first
        [0.05, 0.30, 0.40, 0.25],   # node 1, input 2: sep_conv (0.4), dropped
    ])
    gene = derive_cell(W, steps=2, primitives=OPS)
    assert gene == [("sep_conv_3x3", 0, 0), ("skip_connect", 1, 1),
                    ("max_pool_3x3", 0, 2), ("skip_connect", 1, 3)]


def test_edge_normalisation_changes_the_ranking():
    W = torch.tensor([
        [0.0, 0.2, 0.8, 0.0],
        [0.0, 0.2, 0.8, 0.0],
        [0.0, 0.9, 0.1, 0.0],   # strongest op of node 1 ...
        [0.0, 0.1, 0.6, 0.3],
        [0.0, 0.1, 0.5, 0.4],
    ])
    betas = torch.tensor([0.0, 0.0, -10.0, 0.0, 0.0])  # ... but its edge weight is ~0
    ew = edge_weights(betas, 2)
    assert torch.allclose(ew[:2], torch.tensor([0.5, 0.5]))
    assert ew[2] < 1e-4 and torch.allclose(ew[2:].sum(), torch.tensor(1.0))
    gene = derive_cell(W, steps=2, primitives=OPS, edge_w=ew)
    assert [(op, j) for op, j, _ in gene[2:]] == [("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]
    assert [(op, j) for op, j, _ in derive_cell(W, steps=2, primitives=OPS)[2:]] == \
        [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]


def test_derive_genotype_from_logits():
    a_normal = torch.full((14, 8), -5.0)
    a_normal[:, 4] = 2.0            # sep_conv_3x3 everywhere
    a_normal[:, 0] = 9.0            # 'none' is never chosen
    a_reduce = torch.zeros(14, 8)
    a_reduce[:, 1] = 1.0            # max_pool_3x3 everywhere
    a_reduce[5, 1] = 3.0            # node 2 (rows 5..8): input 0 strongest, then input 1 (ties -> lower index)
    g = derive_genotype(a_normal, a_reduce, steps=4)
    assert g.normal == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)) * 4
    assert g.reduce[4:6] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert g.precision is None


def test_supernet_genotype_takes_argmax_bits():
    torch.manual_seed(0)
    net = CellSuperNet(C=4, layers=3, steps=2, multiplier=2, in_chans=1, bits=(2, 4),
                       primitives=["none", "skip_connect", "sep_conv_3x3"])
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[:, 2] = 1.0          # sep_conv_3x3 on every normal edge
        net.alphas_reduce.zero_()
        net.alphas_reduce[:, 1] = 1.0          # skip_connect on every reduction edge
        net.alphas_reduce[4, 1] = 2.0          # node 1 prefers its input from node 0 (rows 2..4 = inputs 0..2)
        for m in net.mixed_convs():
            m.gamma_weight.copy_(torch.tensor([1.0, 0.0]))   # 2-bit weights
            m.gamma_act.copy_(torch.tensor([0.0, 1.0]))      # 4-bit activations
        sep = net.cells[0].edges[0].op("sep_conv_3x3")
        first = next(m for m in sep.modules() if hasattr(m, "gamma_act"))
        first.gamma_act.copy_(torch.tensor([5.0, 0.0]))      # one conv with 2-bit activations
    g = net.genotype()
    assert g.normal == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)) * 2
    assert g.reduce == (("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 2), ("skip_connect", 0))
    assert [p.reduction for p in g.precision] == [False, True, True]
    normal = g.precision[0]
    assert normal.preprocess0 == ((2, 4),) and normal.preprocess1 == ((2, 4),)
    assert normal.edges[0] == ((2, 2), (2, 4), (2, 4), (2, 4))
    assert all(len(e) == 4 for e in normal.edges)
    # Reduction cells: skip_connect from inputs 0/1 is a FactorizedReduce (2 convs), from nodes an identity.
    assert [len(e) for e in g.precision[1].edges] == [2, 2, 0, 2]
    assert Genotype.from_json(g.to_json()) == g


def test_float_supernet_genotype_has_no_precision():
    net = CellSuperNet(C=4, layers=3, steps=2, multiplier=2, in_chans=1, bits=None)
    assert net.genotype().precision is None


def test_json_round_trip_and_file(genotype, float_genotype, tmp_path):
    for g in (genotype, float_genotype):
        text = g.to_json()
        assert json.loads(text)["format"] == "ws_nas.genotype/1"
        assert Genotype.from_json(text) == g
        assert Genotype.from_dict(json.loads(text)) == g
    path = genotype.save(tmp_path / "sub" / "genotype.json")
    assert Genotype.load(path) == genotype
    assert Genotype.parse(str(path)) == genotype
    assert Genotype.parse(genotype.to_json()) == genotype
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["genotype.json"]
    assert genotype.without_precision() == float_genotype


def test_cyclic_cell_precision(genotype):
    assert genotype.cell_precision(False, 0) is genotype.precision[0]
    assert genotype.cell_precision(False, 3) is genotype.precision[0]
    assert genotype.cell_precision(True, 0) is genotype.precision[1]
    assert genotype.cell_precision(True, 1) is genotype.precision[2]
    assert genotype.cell_precision(True, 2) is genotype.precision[1]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="other"), "expected format"),
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), "unknown operation 'conv_9x9'"),
    (lambda d: d["normal"].__setitem__(0, ["none", 0]), "unknown operation 'none'"),
    (lambda d: d["reduce"].__setitem__(2, ["skip_connect", 3]), r"input of node 1 must be in \[0, 2\], got 3"),
    (lambda d: d["normal_concat"].append(9), "normal_concat"),
    (lambda d: d["precision"][0]["edges"][0].__setitem__(0, [3, 5]), "unsupported bit-width 5"),
    (lambda d: d["precision"][0]["edges"].pop(), "expected bit-widths for 8 kept edges"),
    (lambda d: d.pop("reduce"), "missing keys"),
])
def test_bad_genotype_json_fails_clearly(genotype, mutate, message):
    d = json.loads(genotype.to_json())
    mutate(d)
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict(d)


def test_bad_genotype_inputs(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        Genotype.from_json("{nope")
    with pytest.raises(FileNotFoundError):
        Genotype.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown operation 'conv'"):
        derive_genotype(torch.zeros(14, 2), torch.zeros(14, 2), primitives=["none", "conv"])
