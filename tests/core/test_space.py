from __future__ import annotations

import hashlib
import itertools
import json

import pytest
import torch

from ws_core import Dimension, SearchSpace, SubNetConfig
from ws_core.models.mobilenetv3 import OFAMobileNetV3


def toy_space() -> SearchSpace:
    return SearchSpace(
        [Dimension("resolution", (24, 32), "net"), Dimension("depth", (1, 2), "stage"),
         Dimension("kernel", (3, 5), "block"), Dimension("expand", (2, 4), "block")],
        stage_blocks=(2, 3), base_depth=(0, 1),
    )


def test_ofa_mobilenetv3_size_matches_ofa_count():
    space = OFAMobileNetV3(num_classes=10, width_mult=0.35, resolutions=(32,)).space
    assert space.size() == ((3**2) ** 2 + (3**2) ** 3 + (3**2) ** 4) ** 5
    assert 2.0e19 < space.size() < 2.2e19
    # the elastic resolution dimension (OFA: 128..224 step 4) multiplies the count
    assert OFAMobileNetV3(num_classes=10, width_mult=0.35).space.size() == 25 * space.size()


def _distinct_subnets(space: SearchSpace) -> set[SubNetConfig]:
    """Canonical configs of every combination of choices, position by position (brute force)."""
    seen = set()
    positions = [(d, i) for d in space.dimensions for i in range(space._length(d))]
    for values in itertools.product(*(d.choices for d, _ in positions)):
        cfg: dict = {}
        for (d, _), v in zip(positions, values):
            cfg.setdefault(d.name, []).append(v)
        cfg["resolution"] = cfg["resolution"][0]
        seen.add(space.validate(cfg))
    return seen


def test_size_equals_brute_force_count_of_distinct_subnets():
    space = toy_space()
    seen = _distinct_subnets(space)
    assert space.size() == len(seen)
    # by hand: 2 resolutions x stage0 (1 block: 4 + 2 blocks: 16) x stage1 (2 blocks: 16 + 3 blocks: 64)
    assert space.size() == 2 * (4 + 16) * (16 + 64)


def test_validate_canonicalises_skipped_blocks_and_numbers():
    space = toy_space()
    cfg = space.validate({"resolution": 32.0, "depth": [1, 1], "kernel": [5, 3, 3, 5, 5],
                          "expand": [2, 4, 4, 4, 2]})
    assert cfg["kernel"] == (5, None, 3, 5, None)
    assert cfg["expand"] == (2, None, 4, 4, None)
    assert cfg["resolution"] == 32 and isinstance(cfg["resolution"], int)
    assert space.validate(cfg) == cfg


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"kernel": [7, 3, 3, 3, 3]}, r"dimension 'kernel'\[0\] \(stage 0, block 0\) allows \[3, 5\], got 7"),
        ({"depth": [3, 1]}, r"dimension 'depth'\[0\] allows \[1, 2\], got 3"),
        ({"resolution": 28}, r"dimension 'resolution' allows \[24, 32\], got 28"),
        ({"expand": [2, 2]}, r"'expand' needs 5 values \(one per block\), got 2"),
        ({"expand": 4}, r"'expand' needs a list of 5 values"),
        ({"colour": 1}, r"unknown dimension\(s\) \['colour'\]"),
        ({"kernel": [True, 3, 3, 3, 3]}, r"'kernel'\[0\].*got True"),
    ],
)
def test_validate_errors_name_dimension_choices_and_value(change, pattern):
    space = toy_space()
    cfg = dict(space.max().to_dict(), **change)
    with pytest.raises(ValueError, match=pattern):
        space.validate(cfg)


def test_missing_dimension_and_wrong_type():
    space = toy_space()
    cfg = space.max().to_dict()
    del cfg["kernel"]
    with pytest.raises(ValueError, match=r"missing dimension\(s\) \['kernel'\]"):
        space.validate(cfg)
    with pytest.raises(TypeError):
        space.validate([1, 2, 3])


def test_max_min_and_sampling():
    space = toy_space()
    assert space.max()["depth"] == (2, 2) and space.max()["expand"] == (4, 4, 4, 4, 4)
    assert space.min()["depth"] == (1, 1) and space.min()["kernel"] == (3, None, 3, 3, None)
    a = [space.sample(torch.Generator().manual_seed(4)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    g = torch.Generator().manual_seed(0)
    samples = {space.sample(g) for _ in range(300)}
    assert len(samples) > 80  # many distinct SubNets
    assert all(space.is_valid(s) for s in samples)


def test_mutate_and_crossover():
    space = toy_space()
    g = torch.Generator().manual_seed(1)
    a, b = space.sample(g), space.sample(g)
    assert space.mutate(a, 0.0, g) == a
    mutated = [space.mutate(a, 1.0, g) for _ in range(20)]
    assert any(m != a for m in mutated)
    assert space.crossover(a, a, g) == a
    children = [space.crossover(a, b, g) for _ in range(50)]
    for child in children:  # every position comes from a parent (or is a freshly active block)
        for i, v in enumerate(child["expand"]):
            if v is not None and a["expand"][i] is not None and b["expand"][i] is not None:
                assert v in (a["expand"][i], b["expand"][i])
    with pytest.raises(ValueError, match=r"prob must be in \[0, 1\], got 1.5"):
        space.mutate(a, 1.5, g)


def test_encode_is_one_hot_per_active_position():
    space = toy_space()
    cfg = space.validate({"resolution": 24, "depth": [1, 2], "kernel": [5, 3, 3, 5, 5],
                          "expand": [4, 2, 4, 4, 2]})
    enc = space.encode(cfg)
    # resolution 2 + depth 2x2 + kernel 5x2 + expand 5x2
    assert enc.shape == (space.encoding_length,) == (2 + 4 + 10 + 10,)
    # one hot per net/stage position and per *active* block (4 of 5 blocks run)
    assert enc.sum().item() == 1 + 2 + 4 + 4
    assert enc[:2].tolist() == [1.0, 0.0]
    assert enc[6:8].tolist() == [0.0, 1.0]  # kernel of block 0 = 5


def test_subnet_config_json_round_trip_and_stable_id():
    cfg = SubNetConfig({"depth": [2, 3], "kernel": [3, 5, None, 7], "resolution": 32})
    assert SubNetConfig.from_json(cfg.to_json()) == cfg
    assert SubNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert hash(SubNetConfig(cfg.to_dict())) == hash(cfg)
    # the id is a hash of canonical JSON: stable across processes and versions
    assert cfg.to_json() == '{"depth":[2,3],"kernel":[3,5,null,7],"resolution":32}'
    assert cfg.id == hashlib.sha256(cfg.to_json().encode()).hexdigest()[:12] == "ea402daace52"
    assert cfg.replace(resolution=24).id != cfg.id
    with pytest.raises(AttributeError):
        cfg.depth = 3  # type: ignore[misc]
    assert cfg == cfg.to_dict()  # equal to the plain mapping


def test_space_json_round_trip():
    space = toy_space()
    assert SearchSpace.from_json(space.to_json()) == space
    assert SearchSpace.from_json(space.to_json()).size() == space.size()


def test_space_construction_errors():
    with pytest.raises(ValueError, match="level must be one of"):
        Dimension("x", (1,), "layer")
    with pytest.raises(ValueError, match="duplicate choices"):
        Dimension("x", (1, 1))
    with pytest.raises(ValueError, match="block slots"):
        SearchSpace([Dimension("depth", (1, 4), "stage")], stage_blocks=(3,))


def fixed_depth_space() -> SearchSpace:
    """A last stage of fixed depth (``base_depth == stage_blocks``), as OFA ProxylessNAS's single-block stage."""
    return SearchSpace(
        [Dimension("resolution", (24, 32), "net"), Dimension("depth", (1, 2), "stage"),
         Dimension("kernel", (3, 5), "block")],
        stage_blocks=(2, 1), base_depth=(0, 1),
    )


def test_fixed_depth_stage_runs_all_its_blocks_and_counts_exactly():
    space = fixed_depth_space()
    seen = _distinct_subnets(space)
    # 2 resolutions x stage 0 (1 block: 2 + 2 blocks: 4) x the fixed stage's one block (2)
    assert space.size() == len(seen) == 2 * (2 + 4) * 2
    assert space.max() == {"resolution": 32, "depth": (2, None), "kernel": (5, 5, 5)}
    assert space.min() == {"resolution": 24, "depth": (1, None), "kernel": (3, None, 3)}
    # the fixed stage's depth entry is canonically None, like a skipped block's settings; its block always runs
    cfg = space.validate({"resolution": 24, "depth": [1, 2], "kernel": [5, 3, 3]})
    assert cfg["depth"] == (1, None) and cfg["kernel"] == (5, None, 3)
    assert space.active_blocks(cfg) == (1, 1)
    with pytest.raises(ValueError, match=r"dimension 'depth'\[0\] allows \[1, 2\], got 3"):
        space.validate({"resolution": 24, "depth": [3, 1], "kernel": [5, 3, 3]})
    with pytest.raises(ValueError, match=r"dimension 'kernel'\[2\] \(stage 1, block 0\) allows \[3, 5\], got 7"):
        space.validate({"resolution": 24, "depth": [1, None], "kernel": [5, 3, 7]})
    with pytest.raises(ValueError, match=r"'depth' needs 2 values \(one per stage\), got 1"):
        space.validate({"resolution": 24, "depth": [1], "kernel": [5, 3, 3]})


def test_fixed_depth_stage_sampling_encoding_and_json():
    space = fixed_depth_space()
    g = torch.Generator().manual_seed(0)
    samples = [space.sample(g) for _ in range(200)]
    assert len(set(samples)) == space.size()
    assert all(s["depth"][1] is None and s["kernel"][2] is not None for s in samples)
    a, b = samples[:2]
    assert all(space.is_valid(space.mutate(a, 0.5, g)) and space.is_valid(space.crossover(a, b, g))
               for _ in range(20))
    enc = space.encode(space.max())
    # resolution 2 + depth 2x2 (the fixed stage's group all zeros) + kernel 3x2
    assert enc.shape == (space.encoding_length,) == (2 + 4 + 6,)
    assert enc.tolist() == [0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1]
    restored = SearchSpace.from_json(space.to_json())
    assert restored == space and restored.size() == space.size() and restored.max() == space.max()
    with pytest.raises(ValueError, match="block slots"):  # a stage with base < slots still needs room for the depth
        SearchSpace([Dimension("depth", (1, 2), "stage")], stage_blocks=(2, 2), base_depth=(0, 1))
