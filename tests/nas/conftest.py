from __future__ import annotations

import pytest
import torch

from ws_nas import CellPrecision, Genotype


def _genotype(with_precision: bool) -> Genotype:
    """A small hand-written 4-node genotype with convolutions, pools and skips in both cell types."""
    normal = (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("sep_conv_5x5", 2),
              ("avg_pool_3x3", 1), ("dil_conv_5x5", 3), ("skip_connect", 4), ("sep_conv_3x3", 0))
    reduce = (("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("dil_conv_3x3", 0),
              ("skip_connect", 0), ("avg_pool_3x3", 3), ("sep_conv_5x5", 1), ("max_pool_3x3", 4))
    precision = None
    if with_precision:
        def edge_bits(ops, reduction):
            out = []
            for k, (op, j) in enumerate(ops):
                n = {"sep": 4, "dil": 2}.get(op[:3], 0)
                if op == "skip_connect" and reduction and j < 2:
                    n = 2  # FactorizedReduce
                out.append(tuple(((2, 4) if (k + i) % 2 else (4, 2)) for i in range(n)))
            return tuple(out)

        precision = (
            CellPrecision(False, ((4, 4),), ((2, 2),), edge_bits(normal, False)),
            CellPrecision(True, ((2, 4),), ((4, 2),), edge_bits(reduce, True)),
            CellPrecision(True, ((4, 2), (2, 4)), ((2, 2),), edge_bits(reduce, True)),
        )
    return Genotype(normal, (2, 3, 4, 5), reduce, (2, 3, 4, 5), precision)


@pytest.fixture
def genotype() -> Genotype:
    """Mixed-precision genotype of a 3-cell (normal, reduce, reduce) search network."""
    return _genotype(True)


@pytest.fixture
def float_genotype() -> Genotype:
    return _genotype(False)


@pytest.fixture
def digits_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
