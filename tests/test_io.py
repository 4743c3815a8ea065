"""Atomic writes: readable by others as the umask allows, and their leftovers recognised."""

import os
import stat

from l2kd.io import atomic_dir, remove_leftovers, write_json


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_files_and_folders_follow_the_umask(tmp_path):
    """mkstemp/mkdtemp make owner-only files: results on shared storage were unreadable to others."""
    umask = os.umask(0)
    os.umask(umask)
    f = write_json(tmp_path / "results.json", {"a": 1})
    d = atomic_dir(tmp_path / "ckpt", lambda p: (p / "x").write_text("1"))
    assert mode(f) == 0o666 & ~umask and mode(d) == 0o777 & ~umask


def test_remove_leftovers_takes_only_what_atomic_writes_leave(tmp_path):
    write_json(tmp_path / "results.json", {"a": 1})
    atomic_dir(tmp_path / "checkpoints" / "stage-00", lambda p: (p / "x").write_text("1"))
    left = [tmp_path / ".results.json.k2j4h5g6.tmp", tmp_path / "sub" / ".p.jsonl.abcdefgh.tmp"]
    for p in left:
        p.parent.mkdir(exist_ok=True)
        p.write_text("{")
    half = tmp_path / "checkpoints" / ".stage-01.q1w2e3r4"
    half.mkdir()
    kept = [tmp_path / ".hidden", tmp_path / "notes.tmp", tmp_path / ".x.tmp", tmp_path / "checkpoints" / "stage-00"]
    for p in kept[:3]:
        p.write_text("mine")
    gone = remove_leftovers(tmp_path, dirs_in=("checkpoints",))
    assert sorted(gone) == sorted(left + [half])
    assert all(p.exists() for p in kept) and (tmp_path / "results.json").exists()
