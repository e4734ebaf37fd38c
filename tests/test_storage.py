"""The artifact store: atomic writes under store-chosen names, verified reads, safe loading."""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import pytest
import torch

from slatectl.storage import ArtifactStore, CorruptFile, MissingFile, StorageError, WriteFailed
from slatectl.storage import atomic


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(tmp_path / "artifacts")


def test_put_bytes_records_key_size_and_sha256(store):
    data = b"logged slates" * 100
    stored = store.put_bytes("logged-data", data, suffix=".npz")
    path = store.path_for(stored.key)
    assert path.parent == store.root / "logged-data" and path.suffix == ".npz"
    assert path.read_bytes() == data
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.read_verified(stored.key, stored.size, stored.sha256) == data


def test_same_content_twice_gets_two_files_and_never_overwrites(store):
    first = store.put_bytes("gems", b"same")
    second = store.put_bytes("gems", b"same")
    assert first.key != second.key
    assert sorted(store.iter_keys()) == sorted([first.key, second.key])


def test_existing_final_name_is_never_replaced(store, monkeypatch):
    fixed = uuid.UUID(int=7)
    monkeypatch.setattr("slatectl.storage.store.uuid.uuid4", lambda: fixed)
    original = store.put_bytes("gems", b"original")
    with pytest.raises(FileExistsError):
        store.put_bytes("gems", b"intruder")
    assert store.path_for(original.key).read_bytes() == b"original"
    assert list(store.iter_keys()) == [original.key]  # no temp file left behind


def test_failed_write_leaves_no_file(store, monkeypatch):
    def broken_replace(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(WriteFailed, match="disk full") as failure:
        store.put_bytes("mf", b"embeddings")
    assert failure.value.exit_code == 1 and "nothing was stored" in str(failure.value)
    assert list(store.iter_keys()) == []


def test_put_file_copies_and_keeps_suffix(store, tmp_path):
    source = tmp_path / "data.npz"
    source.write_bytes(os.urandom(3_000_000))
    stored = store.put_file("dataset", source)
    assert stored.key.endswith(".npz")
    assert store.path_for(stored.key).read_bytes() == source.read_bytes()
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(MissingFile):
        store.put_file("dataset", tmp_path / "absent.npz")


def test_state_dict_round_trip(store):
    state = {"layer.weight": torch.randn(4, 3), "layer.bias": torch.zeros(4)}
    stored = store.put_state_dict("checkpoint", state)
    loaded = store.load_state_dict(stored.key, stored.size, stored.sha256)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_corrupted_truncated_and_missing_files_are_refused(store):
    stored = store.put_state_dict("checkpoint", {"w": torch.arange(100.0)})
    path = store.path_for(stored.key)
    original = path.read_bytes()

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptFile, match="SHA-256"):
        store.load_state_dict(stored.key, stored.size, stored.sha256)
    with pytest.raises(CorruptFile, match="SHA-256"):
        store.read_verified(stored.key, stored.size, stored.sha256)

    path.write_bytes(original[:-10])
    with pytest.raises(CorruptFile, match="bytes"):
        store.check(stored.key, stored.size, stored.sha256)

    path.unlink()
    with pytest.raises(MissingFile, match="missing"):
        store.load_state_dict(stored.key, stored.size, stored.sha256)


class NotAStateDict:
    pass


def test_state_dict_load_refuses_arbitrary_pickles(store):
    buffer = io.BytesIO()
    torch.save({"payload": NotAStateDict()}, buffer)
    stored = store.put_bytes("checkpoint", buffer.getvalue(), suffix=".pt")
    with pytest.raises(CorruptFile, match="not a plain tensor state dict"):
        store.load_state_dict(stored.key, stored.size, stored.sha256)


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "checkpoint/../../x", "checkpoint", "Checkpoint/a.pt",
                                 "checkpoint/.hidden", "a/b/c"])
def test_keys_not_made_by_the_store_are_rejected(store, key):
    with pytest.raises(StorageError):
        store.path_for(key)


@pytest.mark.parametrize("kind", ["", "../x", "UPPER", "a/b", ".tmp"])
def test_bad_kinds_are_rejected(store, kind):
    with pytest.raises(StorageError):
        store.put_bytes(kind, b"x")


def test_temp_files_of_unfinished_writes_are_visible(store):
    kept = store.put_bytes("gems", b"done")
    leftover = store.root / "gems" / f"{atomic.TEMP_PREFIX}abc.bin"
    leftover.write_bytes(b"half")
    keys = list(store.iter_keys())
    assert set(keys) == {kept.key, "gems/.tmp-abc.bin"}
    assert store.is_temp("gems/.tmp-abc.bin") and not store.is_temp(kept.key)
    store.remove("gems/.tmp-abc.bin")
    assert list(store.iter_keys()) == [kept.key]


def test_install_tree_copies_a_folder_whole_and_never_replaces_one(tmp_path):
    from slatectl.storage.atomic import TEMP_PREFIX, install_tree

    source = tmp_path / "built"
    (source / "data").mkdir(parents=True)
    (source / "data" / "main.hdf5").write_bytes(b"x" * 1000)
    (source / "metadata.json").write_text("{}")
    final = tmp_path / "root" / "ns" / "ds-v1"
    install_tree(source, final)
    assert (final / "data" / "main.hdf5").read_bytes() == b"x" * 1000 and (final / "metadata.json").read_text() == "{}"

    (source / "metadata.json").write_text('{"changed": true}')
    with pytest.raises(FileExistsError):
        install_tree(source, final)
    assert (final / "metadata.json").read_text() == "{}"
    assert not [p for p in final.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


# -- trash and scratch ---------------------------------------------------------------------------------

def test_trash_moves_files_with_a_log_and_never_overwrites(store, tmp_path):
    from slatectl.storage.trash import LOG_NAME, new_trash_folder

    kept = store.put_bytes("dataset", b"precious bytes")
    gone = store.put_bytes("dataset", b"vanishes")
    store.path_for(gone.key).unlink()  # removed by someone else between listing and moving
    folder = new_trash_folder(tmp_path / "trash")
    assert new_trash_folder(tmp_path / "trash") != folder  # two moves in one second get two folders
    moved = store.move_to_trash([kept.key, gone.key], folder, "orphan")
    assert moved == [kept.key] and not store.exists(kept.key)
    assert (folder / kept.key).read_bytes() == b"precious bytes"
    (line,) = (folder / LOG_NAME).read_text().splitlines()
    assert line.split("\t")[1:4] == [kept.key, str(len(b"precious bytes")), "orphan"]
    again = store.put_bytes("dataset", b"x")
    (folder / again.key).parent.mkdir(parents=True, exist_ok=True)
    (folder / again.key).write_bytes(b"already there")
    with pytest.raises(FileExistsError):
        store.move_to_trash([again.key], folder, "orphan")
    assert store.exists(again.key) and (folder / again.key).read_bytes() == b"already there"


def test_scratch_leftovers_are_judged_by_their_newest_change(tmp_path):
    from slatectl.storage.scratch import remove_leftover, scratch_leftovers

    scratch = tmp_path / "scratch"
    old, busy = scratch / "tmp-old", scratch / "tmp-busy"
    (old / "minari").mkdir(parents=True)
    (busy / "minari").mkdir(parents=True)
    (old / "minari" / "part.hdf5").write_bytes(b"1234")
    (busy / "minari" / "part.hdf5").write_bytes(b"12")
    for path in (old / "minari" / "part.hdf5", old / "minari", old, busy, busy / "minari"):
        os.utime(path, (0, 0))  # only busy's innermost file changed recently: it is still in use
    found = scratch_leftovers(scratch, older_than_s=3600)
    assert [(f.path.name, f.size) for f in found] == [("tmp-old", 4)]
    remove_leftover(found[0])
    assert not old.exists() and busy.exists()
    assert scratch_leftovers(tmp_path / "none") == []
