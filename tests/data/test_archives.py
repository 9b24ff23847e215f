"""Hostile archives, built on the fly: each is refused with one line before anything is written."""

import hashlib
import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import pytest

from tcnsearch.data import archives, enwik8, lra
from tcnsearch.errors import UserError
from tests.data.test_lra import CIFAR_BATCHES, write_cifar


def zeros_zip(path, megabytes: int, name: str = "enwik8") -> None:
    """A zip bomb in miniature: `megabytes` MiB of zeros, deflated about 1000 to 1."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open(name, "w") as fh:
        for _ in range(megabytes):
            fh.write(bytes(1 << 20))


def patch_declared(path, size: int, crc: int | None = None) -> None:
    """Rewrite the (only) member's uncompressed size, and optionally its CRC, in its local header and in
    the central directory: the member then claims one size and inflates to another."""
    data = bytearray(path.read_bytes())
    for signature, crc_at in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        at = data.index(signature)
        if crc is not None:
            struct.pack_into("<I", data, at + crc_at, crc)
        struct.pack_into("<I", data, at + crc_at + 8, size)  # after the CRC: compressed size, then file size
    path.write_bytes(bytes(data))


def make_tar(path, members, mode: str = "w:gz") -> None:
    """members: (TarInfo, bytes or None) pairs."""
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def member(name: str, kind=tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def snapshot(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def refused(call, match: str, root) -> str:
    """Run `call`, expecting a one-line UserError matching `match`, with no file under `root` changed."""
    before = snapshot(root)
    with pytest.raises(UserError, match=match) as err:
        call()
    assert "\n" not in str(err.value) and "nothing was unpacked" in str(err.value)
    assert snapshot(root) == before
    return str(err.value)


# -- zip, through enwik8's unpacking ------------------------------------------------------------------

def test_a_member_that_inflates_beyond_its_declared_size_is_stopped_there(tmp_path):
    text = (b"The quick brown fox jumps over the lazy dog. " * 5000)[:200_000]
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("enwik8", text)
    patch_declared(archive, 1000, crc=zlib.crc32(text[:1000]))  # claims 1,000 bytes, with their true CRC
    with zipfile.ZipFile(archive) as zf:  # why the copy looks past the claim: zipfile alone truncates silently
        assert zf.read("enwik8") == text[:1000]
    message = refused(lambda: enwik8.prepare(archive, tmp_path / "cache"), "inflates beyond the 1,000 bytes", tmp_path)
    assert str(archive) in message
    assert not (tmp_path / "cache").exists()


def test_a_zip_bomb_is_refused_by_the_default_ratio_cap(tmp_path):
    archive = tmp_path / "enwik8.zip"
    zeros_zip(archive, 20)  # 20 MiB of zeros: well under the 1 GiB size cap, about 1000x its zipped size
    ratio = 20 * (1 << 20) / archive.stat().st_size
    assert ratio > 500
    message = refused(lambda: enwik8.prepare(archive, tmp_path / "cache"), "a zip bomb", tmp_path)
    assert f"{ratio:,.0f} times" in message and "at most 100x" in message
    assert not (tmp_path / "cache").exists()


def test_enwik8_like_text_passes_the_default_caps(tmp_path):
    """A few MiB of real-looking text (enwik8.zip unpacks 2.8x) is unpacked, byte for byte."""
    rng = np.random.default_rng(0)
    words = [bytes(rng.integers(97, 123, n).astype(np.uint8)) for n in rng.integers(2, 10, 5000)]
    text = b" ".join(words[i] for i in rng.integers(0, 5000, 600_000))[:3_000_000]
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("enwik8", text)
    assert 1.5 < len(text) / archive.stat().st_size < 100
    assert enwik8.prepare(archive, tmp_path / "cache").read_bytes() == text


@pytest.mark.parametrize("name", ["../enwik8", "/tmp/enwik8", "data/../../enwik8", "C:/enwik8", "..\\enwik8"])
def test_zip_names_outside_the_target_are_refused(tmp_path, name):
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("enwik8", b"x" * 100)
        zf.writestr(zipfile.ZipInfo(name), b"x")  # ZipInfo keeps the name as given
    refused(lambda: enwik8.prepare(archive, tmp_path / "cache"), "would land outside", tmp_path)
    assert not (tmp_path / "cache").exists()


def test_zip_links_sizes_and_counts_over_the_caps_are_refused(tmp_path):
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("enwik8")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    refused(lambda: enwik8.prepare(link, tmp_path / "cache"), "is a link or a device", tmp_path)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(enwik8.LIMITS.max_members + 1):
            zf.writestr(f"part{i}", b"")
    refused(lambda: enwik8.prepare(many, tmp_path / "cache"), "more than 64 members", tmp_path)
    huge = tmp_path / "huge.zip"
    with zipfile.ZipFile(huge, "w") as zf:
        zf.writestr("enwik8", b"small")
    patch_declared(huge, 4_000_000_000)  # declared, never decompressed: refused from the directory alone
    refused(lambda: enwik8.prepare(huge, tmp_path / "cache"), "more than 1,073,741,824 unpacked bytes", tmp_path)
    assert not (tmp_path / "cache").exists()


def test_lowered_caps_apply_to_an_open_zip(tmp_path):
    archive = tmp_path / "a.zip"
    rng = np.random.default_rng(0)
    blocks = [bytes(rng.integers(0, 256, 60, dtype=np.uint8)) + bytes(964) for _ in range(2048)]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a", b"".join(blocks))  # 2 MiB, about 15x: over the ratio floor, under the default cap
    ratio = (2 << 20) / archive.stat().st_size
    assert 10 < ratio < 100
    with zipfile.ZipFile(archive) as zf:
        assert [i.filename for i in archives.check_zip(zf, archive)] == ["a"]
        with pytest.raises(UserError, match="at most 10x"):
            archives.check_zip(zf, archive, archives.Limits(max_ratio=10))
        with pytest.raises(UserError, match="more than 1,000 unpacked bytes"):
            archives.check_zip(zf, archive, archives.Limits(max_bytes=1000))
        with pytest.raises(UserError, match="more than 0 members"):
            archives.check_zip(zf, archive, archives.Limits(max_members=0))


def test_a_member_that_falls_short_or_fails_its_crc_is_refused(tmp_path):
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("enwik8", b"abc" * 1000)
    patch_declared(archive, 5000, crc=zlib.crc32(b"abc" * 1000))
    refused(lambda: enwik8.prepare(archive, tmp_path / "cache"), "holds 3,000 bytes, not the 5,000", tmp_path)
    patch_declared(archive, 3000, crc=12345)
    with pytest.raises(UserError, match="Bad CRC-32"):
        enwik8.prepare(archive, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_no_room_on_the_disk_is_refused(tmp_path):
    with pytest.raises(UserError, match="free; nothing was unpacked"):
        archives.check_space(tmp_path / "a.zip", tmp_path / "not" / "yet" / "there", 1 << 62)


# -- tar, tar.gz ------------------------------------------------------------------------------------

HOSTILE_TARS = {
    "symlink": ([(member("lra/link", tarfile.SYMTYPE, linkname="/etc/passwd"), None)], "is a link"),
    "hardlink": ([(member("lra/a"), b"a"), (member("lra/b", tarfile.LNKTYPE, linkname="lra/a"), None)], "is a link"),
    "fifo": ([(member("lra/pipe", tarfile.FIFOTYPE), None)], "a device, FIFO"),
    "device": ([(member("lra/sda", tarfile.BLKTYPE, devmajor=8), None)], "a device, FIFO"),
    "dotdot": ([(member("lra/../../escaped"), b"x")], "would land outside"),
    "absolute": ([(member("/tmp/escaped"), b"x")], "would land outside"),
    "declared": ([(member("lra/big", size=10**12), None)], "more than 274,877,906,944 unpacked bytes"),
}


@pytest.mark.parametrize("case", list(HOSTILE_TARS))
def test_hostile_tar_members_are_refused_before_anything_is_written(tmp_path, case):
    members, match = HOSTILE_TARS[case]
    archive = tmp_path / "lra_release.gz"
    make_tar(archive, [(member("lra/listops-1000/basic_train.tsv"), b"Source\tTarget\n"), *members])
    refused(lambda: archives.unpack_tar(archive, tmp_path / "cache" / "lra" / "x", lra.LIMITS), match, tmp_path)
    assert not (tmp_path / "cache").exists()


def test_a_tar_bomb_and_too_many_members_are_refused(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=9) as tf:
        info = member("lra/zeros", size=20 << 20)
        tf.addfile(info, io.BytesIO(bytes(20 << 20)))
    target = tmp_path / "cache" / "lra" / "bomb"
    refused(lambda: archives.unpack_tar(bomb, target, lra.LIMITS), "a zip bomb", tmp_path)
    many = tmp_path / "many.tar"
    make_tar(many, [(member(f"lra/{i}"), b"") for i in range(6)], mode="w")
    refused(lambda: archives.unpack_tar(many, target, archives.Limits(max_members=5)), "more than 5 members", tmp_path)
    assert not (tmp_path / "cache").exists()


def test_a_truncated_tar_gz_is_one_line_and_leaves_nothing(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    make_tar(archive, [(member(f"lra/{i}"), os.urandom(5000)) for i in range(4)])
    archive.write_bytes(archive.read_bytes()[:9000])
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="could not be unpacked|not a readable tar") as err:
        archives.unpack_tar(archive, tmp_path / "cache" / "x")
    assert "\n" not in str(err.value) and snapshot(tmp_path) == before


def test_a_good_tar_unpacks_once_through_the_data_filter(tmp_path):
    archive = tmp_path / "data.tar.gz"
    make_tar(archive, [(member("top", tarfile.DIRTYPE, mode=0o755), None),
                       (member("top/run.sh", mode=0o4777), b"#!/bin/sh\n"),
                       (member("top/sub/a.txt", mode=0o644), b"hello")])
    assert archives.check_tar(archive) == len(b"#!/bin/sh\n") + len(b"hello")  # headers only: nothing written
    target = tmp_path / "cache" / "lra" / "data"
    assert not (tmp_path / "cache").exists()
    assert archives.unpack_tar(archive, target) == target
    assert (target / "top" / "sub" / "a.txt").read_bytes() == b"hello"
    mode = (target / "top" / "run.sh").stat().st_mode
    if hasattr(tarfile, "data_filter"):  # the filter clears setuid and group/other write
        assert not mode & (stat.S_ISUID | stat.S_IWGRP | stat.S_IWOTH)
    (target / "top" / "sub" / "a.txt").write_bytes(b"edited")
    archives.unpack_tar(archive, target)  # the same archive: the unpacked folder is reused
    assert (target / "top" / "sub" / "a.txt").read_bytes() == b"edited"
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    archives.unpack_tar(archive, target)  # a changed archive is unpacked again, in place of the old folder
    assert (target / "top" / "sub" / "a.txt").read_bytes() == b"hello"
    assert [p.name for p in target.parent.iterdir()] == ["data"]  # no staging folder left behind


# -- LRA through its archives -------------------------------------------------------------------------

def test_lra_reads_a_task_archive_from_the_cache(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar(tmp_path / "src", {name: {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                                          b"labels": [3, 7]} for name in CIFAR_BATCHES})
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    root = lra.prepare("image", archive, tmp_path / "cache")
    assert root.parent == tmp_path / "cache" / "lra" and root.name.startswith("cifar-10-binary-")
    unpacked, direct = lra.load("image", root, "test"), lra.load("image", tmp_path / "src", "test")
    assert unpacked.inputs.equal(direct.inputs) and unpacked.labels.tolist() == [3, 7]
    assert lra.prepare("image", tmp_path / "src", tmp_path / "cache") == tmp_path / "src"  # a folder as it is
    hostile = tmp_path / "hostile.tar.gz"
    make_tar(hostile, [(member("cifar-10-batches-bin/link", tarfile.SYMTYPE, linkname="/etc/passwd"), None)])
    refused(lambda: lra.prepare("image", hostile, tmp_path / "cache"), "is a link", tmp_path)
    with pytest.raises(UserError, match="neither a folder nor a tar"):
        lra.prepare("image", tmp_path / "src" / "cifar-10-batches-bin" / "test_batch.bin")
