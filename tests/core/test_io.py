from __future__ import annotations

import os

import pytest

from ws_core.io import atomic_directory, atomic_path, atomic_write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_and_folders_get_the_umask_permissions(tmp_path, umask_022):
    assert atomic_write_json(tmp_path / "a.json", {"x": 1}).stat().st_mode & 0o777 == 0o644
    with atomic_directory(tmp_path / "folder") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "folder"]  # no temporaries left


def test_a_writer_that_recreates_the_file_still_gets_the_umask_mode(tmp_path, umask_022):
    target = tmp_path / "b.bin"
    with atomic_path(target) as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors' save_file does
        os.write(fd, b"data")
        os.close(fd)
    assert target.read_bytes() == b"data" and target.stat().st_mode & 0o777 == 0o644


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "c.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["c.txt"]
