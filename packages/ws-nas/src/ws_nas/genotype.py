"""Genotypes: the discrete result of a DARTS / ∇QDARTS search, as JSON.

A :class:`Genotype` holds, per cell type (normal, reduction), two ``(operation, input)`` pairs per
intermediate node and the nodes concatenated into the cell output — exactly DARTS' genotype — plus,
for ∇QDARTS, the precision of every search cell (:class:`CellPrecision`): the ``(weight bits,
activation bits)`` of each convolution of its two preprocessing blocks and of its kept edges.
Operations are shared by all cells of one type (one ``α`` per type); bit-widths are per individual
cell (one ``γ`` pair per convolution of every cell). A float (plain DARTS) genotype has
``precision=None``.

Derivation (DARTS, ∇QDARTS): each intermediate node keeps its top-2 incoming edges ranked by their
strongest non-``none`` operation weight ``softmax(α) × softmax(β)`` (``β``: PC-DARTS edge
normalisation, softmax over a node's incoming edges), and each kept edge takes its argmax non-``none``
operation; each kept convolution takes its argmax bit-widths.

JSON layout::

    {"format": "ws_nas.genotype/1",
     "normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ...],    # 2 per node, inputs 0/1 = cell inputs
     "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5],
     "precision": [                                               # one per search cell, or null
        {"reduction": false,
         "preprocess0": [[4, 2]], "preprocess1": [[2, 2]],        # [weight bits, act bits] per conv
         "edges": [[[2, 4], [2, 2], [4, 2], [2, 2]], [], ...]},  # per kept edge, in genotype order
        ...]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .operations import PRIMITIVES, check_primitives
from .quant import check_bits

__all__ = [
    "FORMAT",
    "Bits",
    "CellPrecision",
    "Genotype",
    "derive_cell",
    "derive_genotype",
    "edge_weights",
    "num_edges",
]

FORMAT = "ws_nas.genotype/1"
Bits = tuple[int, int]  # (weight bits, activation bits)


def num_edges(steps: int) -> int:
    """Edges of a cell with ``steps`` intermediate nodes: ``Σ_{i<steps} (2 + i)`` (14 for 4 nodes)."""
    return sum(2 + i for i in range(steps))


def edge_weights(betas: Tensor, steps: int) -> Tensor:
    """PC-DARTS edge normalisation: softmax of ``β`` over the incoming edges of each node, concatenated."""
    if betas.shape[-1] != num_edges(steps):
        raise ValueError(f"edge_weights: expected {num_edges(steps)} edge logits for {steps} nodes, "
                         f"got {betas.shape[-1]}")
    out, start = [], 0
    for i in range(steps):
        out.append(F.softmax(betas[..., start:start + 2 + i], dim=-1))
        start += 2 + i
    return torch.cat(out, dim=-1)


def derive_cell(
    op_weights: Tensor, steps: int, primitives: Sequence[str] = PRIMITIVES, edge_w: Tensor | None = None
) -> list[tuple[str, int, int]]:
    """DARTS derivation of one cell type from its (already softmaxed) weights.

    Args:
        op_weights: ``[edges, ops]`` operation weights, ``softmax(α)`` per edge.
        steps: intermediate nodes.
        primitives: the operation names, one per column.
        edge_w: optional ``[edges]`` edge weights (``edge_weights(β)``) multiplied into ``op_weights``.

    Returns:
        ``(operation, input, edge index)`` for the two kept edges of every node, node by node; within a
        node, the stronger edge first.
    """
    W = op_weights.detach().float().cpu()
    E = num_edges(steps)
    if W.shape != (E, len(primitives)):
        raise ValueError(f"derive_cell: expected op weights of shape [{E}, {len(primitives)}], got {list(W.shape)}")
    if edge_w is not None:
        W = W * edge_w.detach().float().cpu().reshape(E, 1)
    candidates = [k for k, p in enumerate(primitives) if p != "none"]
    if not candidates:
        raise ValueError("derive_cell: no operation besides 'none' to choose from")
    gene: list[tuple[str, int, int]] = []
    start = 0
    for i in range(steps):
        n = 2 + i
        strength = {j: max(float(W[start + j, k]) for k in candidates) for j in range(n)}
        kept = sorted(range(n), key=lambda j: (-strength[j], j))[:2]
        for j in kept:
            k_best = max(candidates, key=lambda k: (float(W[start + j, k]), -k))
            gene.append((primitives[k_best], j, start + j))
        start += n
    return gene


@dataclass(frozen=True)
class CellPrecision:
    """Bit-widths of one search cell: ``(weight bits, act bits)`` per convolution, in forward order."""

    reduction: bool
    preprocess0: tuple[Bits, ...]
    preprocess1: tuple[Bits, ...]
    edges: tuple[tuple[Bits, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reduction": self.reduction,
            "preprocess0": [list(b) for b in self.preprocess0],
            "preprocess1": [list(b) for b in self.preprocess1],
            "edges": [[list(b) for b in e] for e in self.edges],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "precision") -> CellPrecision:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
        missing = {"reduction", "preprocess0", "preprocess1", "edges"} - set(d)
        if missing:
            raise ValueError(f"{where}: missing keys {sorted(missing)}")
        if not isinstance(d["reduction"], bool):
            raise ValueError(f"{where}.reduction must be true or false, got {d['reduction']!r}")
        return cls(
            reduction=d["reduction"],
            preprocess0=_bits_list(d["preprocess0"], f"{where}.preprocess0"),
            preprocess1=_bits_list(d["preprocess1"], f"{where}.preprocess1"),
            edges=tuple(_bits_list(e, f"{where}.edges[{i}]") for i, e in enumerate(_seq(d["edges"], f"{where}.edges"))),
        )


def _seq(value: Any, where: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    return list(value)


def _bits_list(value: Any, where: str) -> tuple[Bits, ...]:
    out = []
    for i, pair in enumerate(_seq(value, where)):
        pair = _seq(pair, f"{where}[{i}]")
        if len(pair) != 2:
            raise ValueError(f"{where}[{i}]: expected [weight bits, act bits], got {pair!r}")
        w = check_bits(pair[0], f"{where}[{i}] weight bits")[0]
        a = check_bits(pair[1], f"{where}[{i}] act bits")[0]
        out.append((w, a))
    return tuple(out)


@dataclass(frozen=True)
class Genotype:
    """A DARTS genotype with optional per-cell bit-widths (see the module docstring for the JSON form).

    Example::

        >>> g = Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1)) * 4, normal_concat=(2, 3, 4, 5),
        ...              reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4, reduce_concat=(2, 3, 4, 5))
        >>> Genotype.from_json(g.to_json()) == g
        True
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    precision: tuple[CellPrecision, ...] | None = None

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            edges = getattr(self, kind)
            if len(edges) == 0 or len(edges) % 2:
                raise ValueError(f"Genotype.{kind}: expected two (operation, input) pairs per node, got {len(edges)}")
            steps = len(edges) // 2
            for k, (op, j) in enumerate(edges):
                if op not in PRIMITIVES or op == "none":
                    allowed = [p for p in PRIMITIVES if p != "none"]
                    raise ValueError(f"Genotype.{kind}[{k}]: unknown operation {op!r}; allowed: {allowed}")
                node = k // 2
                if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < node + 2:
                    raise ValueError(
                        f"Genotype.{kind}[{k}]: input of node {node} must be in [0, {node + 1}], got {j!r}")
            concat = getattr(self, f"{kind}_concat")
            if not concat or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < steps + 2
                                 for c in concat):
                raise ValueError(
                    f"Genotype.{kind}_concat: expected node indices in [0, {steps + 1}], got {list(concat)}")
        if len(self.normal) != len(self.reduce):
            raise ValueError(f"Genotype: normal and reduce cells must have the same number of nodes, "
                             f"got {len(self.normal) // 2} and {len(self.reduce) // 2}")
        if self.precision is not None:
            if len(self.precision) == 0:
                raise ValueError("Genotype.precision: expected one entry per search cell (or null), got none")
            for i, p in enumerate(self.precision):
                ops = self.reduce if p.reduction else self.normal
                if len(p.edges) != len(ops):
                    raise ValueError(f"Genotype.precision[{i}]: expected bit-widths for {len(ops)} kept edges, "
                                     f"got {len(p.edges)}")

    @property
    def steps(self) -> int:
        """Intermediate nodes per cell."""
        return len(self.normal) // 2

    def cell_precision(self, reduction: bool, index: int) -> CellPrecision:
        """Bit-widths for the ``index``-th cell of a type, re-using the search cells of that type cyclically."""
        if self.precision is None:
            raise ValueError("this genotype has no precision (a float genotype)")
        cells = [p for p in self.precision if p.reduction == reduction]
        if not cells:
            kind = "reduction" if reduction else "normal"
            raise ValueError(f"this genotype has no precision for {kind} cells (the search network had none)")
        return cells[index % len(cells)]

    def without_precision(self) -> Genotype:
        """The same architecture as a float genotype."""
        return Genotype(self.normal, self.normal_concat, self.reduce, self.reduce_concat, None)

    # JSON -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "normal": [[op, j] for op, j in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, j] for op, j in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "precision": None if self.precision is None else [p.to_dict() for p in self.precision],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Genotype:
        if not isinstance(d, Mapping):
            raise ValueError(f"Genotype: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"Genotype: expected format {FORMAT!r}, got {d.get('format')!r}")
        missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(d)
        if missing:
            raise ValueError(f"Genotype: missing keys {sorted(missing)}")

        def edges(kind: str) -> tuple[tuple[str, int], ...]:
            out = []
            for k, e in enumerate(_seq(d[kind], kind)):
                e = _seq(e, f"{kind}[{k}]")
                if len(e) != 2:
                    raise ValueError(f"Genotype.{kind}[{k}]: expected [operation, input], got {e!r}")
                out.append((e[0], e[1]))
            return tuple(out)

        precision = d.get("precision")
        return cls(
            normal=edges("normal"),
            normal_concat=tuple(_seq(d["normal_concat"], "normal_concat")),
            reduce=edges("reduce"),
            reduce_concat=tuple(_seq(d["reduce_concat"], "reduce_concat")),
            precision=None if precision is None else tuple(
                CellPrecision.from_dict(p, f"precision[{i}]") for i, p in enumerate(_seq(precision, "precision"))
            ),
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, s: str) -> Genotype:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"Genotype: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (:func:`ws_core.io.atomic_write_text`)."""
        from ws_core.io import atomic_write_text

        return atomic_write_text(path, self.to_json(indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such genotype file")
        try:
            return cls.from_json(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def parse(cls, value: Genotype | Mapping[str, Any] | str | os.PathLike) -> Genotype:
        """A genotype from itself, a dict, a JSON string or a path to a JSON file."""
        if isinstance(value, Genotype):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            return cls.from_json(value)
        if isinstance(value, (str, os.PathLike)):
            return cls.load(value)
        raise TypeError(f"expected a Genotype, a dict, a JSON string or a path, got {type(value).__name__}")


def derive_genotype(
    alphas_normal: Tensor,
    alphas_reduce: Tensor,
    betas_normal: Tensor | None = None,
    betas_reduce: Tensor | None = None,
    steps: int = 4,
    multiplier: int = 4,
    primitives: Sequence[str] = PRIMITIVES,
) -> Genotype:
    """The float genotype of architecture logits (``α`` per cell type, optional ``β``).

    Example::

        >>> a = torch.zeros(14, 8); a[:, 4] = 1.0           # sep_conv_3x3 everywhere
        >>> g = derive_genotype(a, a)
        >>> g.normal[:2]
        (('sep_conv_3x3', 0), ('sep_conv_3x3', 1))
    """
    primitives = check_primitives(primitives)
    if not 1 <= multiplier <= steps:
        raise ValueError(f"multiplier must be in [1, {steps}], got {multiplier}")
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    genes = []
    for alphas, betas in ((alphas_normal, betas_normal), (alphas_reduce, betas_reduce)):
        ew = None if betas is None else edge_weights(betas.detach(), steps)
        gene = derive_cell(F.softmax(alphas.detach(), dim=-1), steps, primitives, ew)
        genes.append(tuple((op, j) for op, j, _ in gene))
    return Genotype(genes[0], concat, genes[1], concat)
