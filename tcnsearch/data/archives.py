"""Archives checked before they are read: zip and tar(.gz) members, sizes and ratio checked, then unpacked bounded.

Nothing from outside is trusted. Before a byte is written, every member is checked: its name (no
absolute path, no `..`, no drive letter), its type (regular files and folders only: no symlink,
hard link, device or FIFO), the member count, the declared uncompressed total against a cap and
against the archive's own size (the compression ratio: enwik8.zip is 2.8x, text rarely passes
10x, a zip bomb is 1000x) and against the free disk space. While copying, a zip member is read
at most one byte past its declared size, so one that claims 1 KB and inflates to 1 GB is refused
at 1 KB + 1. A tar is unpacked with tarfile's "data" extraction filter where Python has it
(3.10.12+, 3.11.4+, 3.12), as a second line behind these checks. A refusal is a UserError of one
line, and the target is left as it was (a folder this call made is removed).
"""

from __future__ import annotations

import copy
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tcnsearch.errors import UserError

_MARKER = ".tcnsearch-unpacked"  # in an unpacked folder: the archive's size and mtime it came from
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


@dataclass(frozen=True)
class Limits:
    """What an archive may hold. ratio_floor: below this many unpacked bytes the ratio is not checked
    (a small file of repeated text compresses 100x and harms nobody)."""

    max_members: int = 10_000
    max_bytes: int = 1 << 30
    max_ratio: float = 100.0
    ratio_floor: int = 1 << 20


def data_dir() -> Path:
    """The data cache: $TCNSEARCH_DATA, default ~/.cache/tcnsearch/data."""
    return Path(os.environ.get("TCNSEARCH_DATA", Path.home() / ".cache" / "tcnsearch" / "data"))


def _refuse(archive: Path, what: str, hint: str) -> UserError:
    return UserError(f"{archive}: refused, {what}; nothing was unpacked ({hint})")


def _check_name(archive: Path, name: str, hint: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts or "\0" in name:
        raise _refuse(archive, f"member {name[:120]!r} would land outside the folder it is unpacked into", hint)


class _Tally:
    """The running member count and declared total, checked against the limits as members arrive."""

    def __init__(self, archive: Path, limits: Limits, hint: str):
        self.archive, self.limits, self.hint = archive, limits, hint
        self.compressed = max(archive.stat().st_size, 1)
        self.members, self.total = 0, 0

    def add(self, name: str, size: int, unpacked_so_far: int = 0) -> None:
        lim, archive, hint = self.limits, self.archive, self.hint
        self.members += 1
        self.total += size
        if self.members > lim.max_members:
            raise _refuse(archive, f"it holds more than {lim.max_members:,} members", hint)
        _check_name(archive, name, hint)
        if self.total > lim.max_bytes:
            raise _refuse(archive, f"it declares more than {lim.max_bytes:,} unpacked bytes", hint)
        unpacked = max(self.total, unpacked_so_far)
        if unpacked > lim.ratio_floor and unpacked / self.compressed > lim.max_ratio:
            ratio = unpacked / self.compressed
            raise _refuse(archive, f"its {unpacked:,} unpacked bytes are {ratio:,.0f} times its {self.compressed:,} "
                                   f"compressed bytes (at most {lim.max_ratio:g}x): a zip bomb", hint)


def check_space(archive: Path, target: Path, need: int, hint: str = "pass the original download") -> None:
    """Refuse unpacking `need` bytes at `target` when its disk lacks the room."""
    archive, where = Path(archive), Path(target)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise _refuse(archive, f"it unpacks to {need:,} bytes and {where} has {free:,} free", hint)


# -- zip ---------------------------------------------------------------------------------------------

def check_zip(zf: zipfile.ZipFile, archive: Path, limits: Limits = Limits(),
              hint: str = "pass the original download") -> list[zipfile.ZipInfo]:
    """Every member of an open zip, checked (names, types, count, declared sizes, ratio); nothing read yet.

    Raises:
        UserError: one line naming the first member or figure that is refused.
    """
    archive = Path(archive)
    tally = _Tally(archive, limits, hint)
    infos = zf.infolist()
    for info in infos:
        tally.add(info.filename, info.file_size)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, f"member {info.filename[:120]!r} is a link or a device, not a file", hint)
        if info.flag_bits & 0x1 or info.compress_type not in _ZIP_METHODS:
            raise _refuse(archive, f"member {info.filename[:120]!r} is encrypted or uses an unknown compression", hint)
    return infos


def copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst, archive: Path,
                hint: str = "pass the original download") -> int:
    """Copy a checked member into the open file `dst`, stopping one byte past its declared size.

    zipfile alone stops at the declared size (and passes, if the CRC of those bytes was forged too),
    so it is asked for one byte more, with the CRC checked here, over the declared bytes (a CRC of
    None is zipfile's "nothing to compare with").

    Raises:
        UserError: the member inflates beyond, or falls short of, its declared size.
        zipfile.BadZipFile: its bytes fail their CRC.
    """
    archive, size = Path(archive), info.file_size
    probe = copy.copy(info)
    probe.file_size, probe.CRC = size + 1, None
    copied, crc = 0, 0
    with zf.open(probe) as src:
        while block := src.read(1 << 22):
            copied += len(block)
            if copied > size:
                raise _refuse(archive, f"member {info.filename[:120]!r} inflates beyond the {size:,} bytes it "
                                       "declares", hint)
            crc = zlib.crc32(block, crc)
            dst.write(block)
    if copied < size:
        raise _refuse(archive, f"member {info.filename[:120]!r} holds {copied:,} bytes, not the {size:,} it declares",
                      hint)
    if crc != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename[:120]!r}")
    return copied


# -- tar, tar.gz -----------------------------------------------------------------------------------

def is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):
        return False


def _checked(tf: tarfile.TarFile, archive: Path, limits: Limits, hint: str) -> list[tarfile.TarInfo]:
    """The tar's members, each checked as its header arrives: a declared size is refused before its
    data is decompressed, and the stream read so far counts toward the ratio."""
    tally = _Tally(archive, limits, hint)
    members = []
    for member in tf:
        tally.add(member.name, member.size if member.isreg() else 0, tf.offset)
        if not (member.isreg() or member.isdir()) or member.issparse():
            kind = "a link" if member.issym() or member.islnk() else "a device, FIFO or sparse file"
            raise _refuse(archive, f"member {member.name[:120]!r} is {kind}, not a file", hint)
        members.append(member)
    return members


def check_tar(archive: Path, limits: Limits = Limits(), hint: str = "pass the original download") -> int:
    """Check every member of a tar or tar.gz (reading headers only); returns the declared unpacked total.

    Raises:
        UserError: a refused member or figure, or an archive that cannot be read.
    """
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:*") as tf:
            return sum(m.size for m in _checked(tf, archive, limits, hint))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise UserError(f"{archive} is not a readable tar archive ({err}); delete it and download again") from None


def unpack_tar(archive: Path, target: Path, limits: Limits = Limits(),
               hint: str = "pass the original download") -> Path:
    """Unpack a checked tar(.gz) into the folder `target`, all or nothing; reused while the archive is unchanged.

    Members are checked, then unpacked into a staging folder beside `target` that is renamed into
    place at the end: a refusal or a failure part-way leaves `target` as it was.
    """
    archive, target = Path(archive), Path(target)
    source = archive.stat()
    stamp = f"{source.st_size} {source.st_mtime_ns}"
    marker = target / _MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return target
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    staging = None
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = _checked(tf, archive, limits, hint)  # headers only: nothing is written before this
            check_space(archive, target, sum(m.size for m in members), hint)
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
            # The "data" filter (where Python has it) refuses what the checks refused and clears
            # setuid and group/other-write bits; without it the checks above stand alone.
            tf.extractall(staging, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        (staging / _MARKER).write_text(stamp)
        if target.exists():
            shutil.rmtree(target)  # an older unpacking of a since-replaced archive
        try:
            staging.rename(target)
        except OSError:
            if not (marker.is_file() and marker.read_text() == stamp):
                raise
            shutil.rmtree(staging)  # another process unpacked the same archive first
    except (tarfile.TarError, OSError, EOFError, zlib.error, UserError) as err:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if made:  # the folders this call made
            shutil.rmtree(made[-1], ignore_errors=True)
        if isinstance(err, UserError):
            raise
        raise UserError(f"{archive} could not be unpacked into {target.parent} ({err}); delete it and download "
                        "again, or unpack it yourself and pass the folder") from None
    return target

