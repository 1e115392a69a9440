"""The shared fetch engine (``_hydrate.hydrate``): what happens to a path that leaves the
manifest. Driven through the ``file://`` backend, or directly with a counting transfer."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from runform.interfaces import ManifestEntry
from runform.storage import hydrate as _hydrate
from runform.storage.record import RECORD_NAME, Fetched, Record
from runform.storage_backends.file import FileBackend


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under ``root`` with (inode, size, mtime_ns)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[p.relative_to(root).as_posix()] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def src_dest(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _write(src, {"a.txt": b"alpha\n", "task_train_0.h5": b"0" * 100, "task_train_1.h5": b"1" * 100,
                 "sub/gone/x.bin": b"x" * 1000, "sub/keep.txt": b"keep\n"})
    return src, dest


def _fetch(src: Path, dest: Path) -> int:
    b = FileBackend()
    return b.fetch(b.resolve(src.as_uri(), {}), dest, {})


def test_removed_path_is_deleted_with_the_folders_it_empties(src_dest, caplog):
    src, dest = src_dest
    _fetch(src, dest)
    assert (dest / "sub/gone/x.bin").exists() and (dest / "task_train_1.h5").exists()

    os.remove(src / "sub/gone/x.bin")
    os.remove(src / "task_train_1.h5")
    with caplog.at_level(logging.INFO, logger="runform.storage"):
        assert _fetch(src, dest) == 0
    assert not (dest / "task_train_1.h5").exists()
    assert sorted(p.name for p in dest.glob("task_train_*.h5")) == ["task_train_0.h5"]
    assert not (dest / "sub/gone").exists()  # emptied by the deletion
    assert (dest / "sub/keep.txt").read_bytes() == b"keep\n"  # still holds a wanted file
    assert set(Record.load(dest).files) == {"a.txt", "task_train_0.h5", "sub/keep.txt"}
    assert "removed 2 file(s)" in caplog.text

    # everything leaves the source: every fetched file and folder goes, the root stays
    shutil.rmtree(src)
    src.mkdir()
    assert _fetch(src, dest) == 0
    assert dest.is_dir()
    assert [p.name for p in dest.iterdir()] == [RECORD_NAME]
    assert Record.load(dest).files == {}


def test_removed_path_changed_since_hydration_is_kept(src_dest, caplog):
    src, dest = src_dest
    _fetch(src, dest)
    rec = Record.load(dest).files
    # a stage rewrote one (new size, recorded mtime put back: size alone must count) ...
    resized = dest / "task_train_1.h5"
    resized.write_bytes(b"rewritten by a stage")
    os.utime(resized, ns=(rec["task_train_1.h5"].mtime_ns, rec["task_train_1.h5"].mtime_ns))
    # ... and the user touched another (same size, new mtime)
    touched = dest / "sub/gone/x.bin"
    os.utime(touched, ns=(1_000_000_000, 1_000_000_000))
    os.remove(src / "task_train_1.h5")
    os.remove(src / "sub/gone/x.bin")

    with caplog.at_level(logging.WARNING, logger="runform.storage"):
        assert _fetch(src, dest) == 0
    assert resized.read_bytes() == b"rewritten by a stage"
    assert touched.read_bytes() == b"x" * 1000
    assert "task_train_1.h5" in caplog.text and "x.bin" in caplog.text
    # no longer runform's: out of the record, so the next fetch is a no-change one
    assert set(Record.load(dest).files) == {"a.txt", "task_train_0.h5", "sub/keep.txt"}
    before = _snapshot(dest)
    assert _fetch(src, dest) == 0
    assert _snapshot(dest) == before


def test_files_the_record_does_not_list_are_never_touched(src_dest, tmp_path):
    src, dest = src_dest
    _fetch(src, dest)
    _write(dest, {"sub/gone/notes.txt": b"mine", "task_train_9.h5": b"mine too"})
    os.remove(src / "sub/gone/x.bin")
    assert _fetch(src, dest) == 0
    assert not (dest / "sub/gone/x.bin").exists()
    assert (dest / "sub/gone/notes.txt").read_bytes() == b"mine"  # its folder stays with it
    assert (dest / "task_train_9.h5").read_bytes() == b"mine too"

    # no record at all (lost, unreadable): nothing is deleted, whatever the manifest says
    (dest / RECORD_NAME).unlink()
    os.remove(src / "task_train_1.h5")
    assert _fetch(src, dest) == 0  # the rest is adopted by content
    assert (dest / "task_train_1.h5").exists()

    # a record naming a path outside dest (hand-edited, corrupted) deletes nothing there
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    record = Record.load(dest)
    st = outside.stat()
    record.files["../outside.txt"] = Fetched(st.st_size, "sha256:00", "sha256:00", st.st_mtime_ns)
    record.save()
    assert _fetch(src, dest) == 0
    assert outside.read_bytes() == b"precious"
    assert "../outside.txt" not in Record.load(dest).files


def test_second_hydrate_with_no_change_writes_nothing(src_dest, monkeypatch):
    src, dest = src_dest
    b = FileBackend()
    _fetch(src, dest)
    os.remove(src / "sub/gone/x.bin")
    m = b.resolve(src.as_uri(), {})
    calls: list[ManifestEntry] = []

    def transfer(entry: ManifestEntry, tmp: Path, progress: _hydrate.Progress) -> None:
        calls.append(entry)
        shutil.copyfile(src / entry.path, tmp)

    assert _hydrate.hydrate(m, dest, transfer=transfer) == 0  # the removal
    assert calls == [] and not (dest / "sub/gone").exists()

    before = _snapshot(dest)

    def no_save(self: Record) -> None:
        raise AssertionError("the no-change path wrote the record")

    monkeypatch.setattr(Record, "save", no_save)
    assert _hydrate.hydrate(m, dest, transfer=transfer) == 0
    assert calls == []
    assert _snapshot(dest) == before


def test_a_removed_name_that_is_the_same_file_as_a_wanted_one_is_kept(tmp_path):
    """Renamed by case only ("A.txt" -> "a.txt"): on a case-insensitive filesystem both names
    are one file. Simulated here with a hard link; deleting "A.txt" there would delete the
    file the manifest wants."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    _write(src, {"A.txt": b"same\n"})
    _fetch(src, dest)
    (src / "A.txt").rename(src / "a.txt")
    os.link(dest / "A.txt", dest / "a.txt")
    assert _fetch(src, dest) == 0
    # not unlinked (a hard link would survive that; the one file of a case-insensitive
    # filesystem would not), only dropped from the record
    assert (dest / "A.txt").exists()
    assert (dest / "a.txt").read_bytes() == b"same\n"
    assert set(Record.load(dest).files) == {"a.txt"}

    # where they are two files (a case-sensitive filesystem), the old name goes
    src2, dest2 = tmp_path / "src2", tmp_path / "dest2"
    _write(src2, {"C.txt": b"see\n"})
    _fetch(src2, dest2)
    (src2 / "C.txt").rename(src2 / "c.txt")
    if (dest2 / "c.txt").exists():
        return  # case-insensitive here: the first half covered it
    assert _fetch(src2, dest2) == 4
    assert not (dest2 / "C.txt").exists() and (dest2 / "c.txt").read_bytes() == b"see\n"


# ---------------------------------------------------------------------- S3's CRC32 as the check


def _b64(crc: int) -> str:
    import base64

    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _composite(data: bytes, part: int) -> str:
    """S3's composite CRC32 of a multipart upload: CRC32 of the parts' big-endian CRC32s."""
    import zlib

    parts = [zlib.crc32(data[i:i + part]).to_bytes(4, "big") for i in range(0, len(data), part)]
    return f"{_b64(zlib.crc32(b''.join(parts)))}-{len(parts)}"


def test_a_full_object_crc32_checks_the_bytes_and_catches_one_flipped_byte() -> None:
    import zlib

    from runform.storage.digest import CrcHasher

    data = os.urandom(3 << 20)
    good = CrcHasher(_b64(zlib.crc32(data)), len(data))
    for i in range(0, len(data), 1 << 20):
        good.update(data[i:i + (1 << 20)])
    result = good.result()
    assert result is not None and result.ok and result.checked and result.content.startswith("crc32:")
    bad = CrcHasher(_b64(zlib.crc32(data)), len(data))
    bad.update(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    result = bad.result()
    assert result is not None and not result.ok  # a mismatch, retried then reported


def test_a_composite_crc32_is_checked_with_the_uploaders_part_size(tmp_path: Path) -> None:
    from runform.storage.digest import CrcHasher, content_of

    data = os.urandom(20 << 20)  # 8 MiB parts: 3 of them, as boto3 and the AWS CLI upload
    header = _composite(data, 8 << 20)
    assert CrcHasher.usable(header, len(data))
    h = CrcHasher(header, len(data))
    h.update(data)
    result = h.result()
    assert result is not None and result.ok and result.content.startswith("crc32mp:8388608:")
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert content_of(path, result.content) == result.content  # what verify recomputes
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert content_of(path, result.content) != result.content
    wrong = CrcHasher(header, len(data))
    wrong.update(data[:-1] + bytes([data[-1] ^ 1]))
    assert wrong.result() is None  # not proven: the engine checks the file against the ETag


def test_a_crc_header_that_cannot_be_checked_is_not_used() -> None:
    from runform.storage.digest import CrcHasher

    assert not CrcHasher.usable(None, 10)
    assert not CrcHasher.usable("not-base64!", 10)
    assert not CrcHasher.usable("AAAAAA==-3", 10)  # 3 parts of 10 bytes: no known part size
