"""Whole-network BitOps (stem + cells + head) against a hand count on a tiny network."""

from __future__ import annotations

import pytest
from torch import nn

from ws_nas import DARTSNetwork, QuantConv2d, cost_report
from ws_nas.cost import bitops_breakdown


class TinyNetwork(nn.Module):
    """A float stem conv, two quantized cell convs, a float classifier — DARTS naming."""

    def __init__(self):
        super().__init__()
        self.in_chans = 1
        self.stem = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2))
        self.cells = nn.ModuleList([
            QuantConv2d(2, 4, 1, bias=False, weight_bit_width=4, act_bit_width=2),
            QuantConv2d(4, 4, 3, stride=2, padding=1, bias=False, weight_bit_width=2, act_bit_width=2),
        ])
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.global_pooling(x).flatten(1))


def test_bitops_breakdown_hand_count():
    # 4×4 input, BitOps = MACs × weight bits × activation bits, float layers at 32 × 32:
    #   stem conv      2·1·3·3 = 18 weights × 16 positions = 288 MACs × 32 · 32 = 294,912
    #   cells.0 (1×1)  4·2     =  8 weights × 16 positions = 128 MACs ×  4 ·  2 =   1,024
    #   cells.1 (3×3, stride 2) 4·4·3·3 = 144 weights × 4 positions = 576 MACs × 2 · 2 = 2,304
    #   classifier     4·3     = 12 weights ×  1 position  =  12 MACs × 32 · 32 =  12,288
    b = bitops_breakdown(TinyNetwork(), 4)
    assert (b.stem, b.cells, b.head) == (294_912, 3_328, 12_288)
    assert b.total == 310_528
    assert b.to_dict() == {"stem": 294_912, "cells": 3_328, "head": 12_288, "total": 310_528}
    # the cells alone are ~1% of the whole network's BitOps here: a cells-only reduction says little
    assert b.cells / b.total == pytest.approx(0.010717, rel=1e-4)


def test_bitops_breakdown_agrees_with_cost_report(genotype):
    net = DARTSNetwork(genotype, num_classes=10, C=4, layers=3, in_chans=1)
    b, report = bitops_breakdown(net, 8), cost_report(net, 8)
    assert b.total == pytest.approx(report.bitops) and b.cells == pytest.approx(report.cell_bitops)
    assert b.stem > 0 and b.head > 0 and b.cells > 0
    # the stem conv (3·C = 12 channels, 3×3 over 1 input channel, 8×8 positions) and the classifier, in float
    assert b.stem == 12 * 1 * 9 * 64 * 32 * 32
    assert b.head == net.classifier.weight.numel() * 32 * 32


def test_bitops_breakdown_of_a_float_network_counts_everything_at_32_bits(float_genotype):
    net = DARTSNetwork(float_genotype, num_classes=10, C=4, layers=3, in_chans=1, precision="float")
    b = bitops_breakdown(net, 8)
    assert b.total == cost_report(net, 8).macs * 32 * 32
