"""enwik8: the first 10^8 bytes of an English Wikipedia dump (the Hutter Prize file).

Byte-level tokens (256). Standard split: the first 90M bytes train, the next 5M validation, the
last 5M test; the metric is bits per character (mean cross-entropy in nats / ln 2). As in the
TCNCA paper (supplementary F): the text is cut into consecutive chunks of `chunk` bytes; a
training window is 2, 3 or 4 consecutive chunks at a random chunk boundary; evaluation reads
consecutive windows of `eval_chunks` chunks.

`download()` fetches enwik8.zip from the Hutter Prize site into the cache directory
($TCNSEARCH_DATA, default ~/.cache/tcnsearch/data) and checks the unzipped file's MD5. A local
copy can be given instead (`--data PATH`, the zip or the raw file). Any other file is accepted as
a custom byte corpus and split 90/5/5 by length, which for enwik8 itself is exactly 90M/5M/5M.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from tcnsearch.data import archives
from tcnsearch.data.archives import data_dir
from tcnsearch.errors import UserError

URL = "http://mattmahoney.net/dc/enwik8.zip"
MD5 = "a1fa5ffddb56f4953e226637dabbb36a"
SIZE = 100_000_000
SPLITS = {"train": (0.0, 0.9), "valid": (0.9, 0.95), "test": (0.95, 1.0)}
# enwik8.zip holds one member and unpacks 2.8x; 1 GiB leaves room for a larger custom corpus.
LIMITS = archives.Limits(max_members=64, max_bytes=1 << 30, max_ratio=100.0)
_HINT = "pass the Hutter Prize enwik8.zip or the unzipped enwik8"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: Path, target: Path) -> Path:
    """Unpack the archive's `enwik8` member next to `target`, check it, then move it into place.

    Nothing enters the cache unchecked: the archive is checked first (archives.check_zip: member
    names and types, count, declared sizes, compression ratio), then the member is copied no further
    than its declared size; an archive without that member, a member that is not what it claims
    (100,000,000 bytes with another MD5) or a torn extraction leaves `target` as it was.
    """
    tmp = target.with_name(f".{target.name}.part")
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = archives.check_zip(zf, archive, LIMITS, hint=_HINT)
            members = [i for i in infos if i.filename.rstrip("/").split("/")[-1] == "enwik8" and not i.is_dir()]
            if not members:
                names = [i.filename for i in infos]
                shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
                raise UserError(f"{archive} has no 'enwik8' member (it holds: {shown or 'nothing'}); {_HINT}")
            archives.check_space(archive, target, members[0].file_size, hint=_HINT)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as dst:
                archives.copy_member(zf, members[0], dst, archive, hint=_HINT)
        _check(tmp, shown_as=f"{archive}:enwik8")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, UserError) as err:
        tmp.unlink(missing_ok=True)
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)  # the cache folders this call made, now empty
        if isinstance(err, UserError):
            raise
        raise UserError(f"{archive} is not a readable enwik8.zip ({err}); delete it and download again") from None
    tmp.replace(target)
    return target


def _check(path: Path, shown_as: str | None = None) -> None:
    """The real enwik8 must match its published MD5; other corpora are taken as they are (the task
    then checks they are large enough for its splits)."""
    if path.stat().st_size == SIZE and md5sum(path) != MD5:
        raise UserError(f"{shown_as or path} is 100,000,000 bytes but its MD5 is not enwik8's ({MD5}); "
                        "the file is corrupt: delete it and download again")


def check_splits(path: Path, train_bytes: int, eval_bytes: int) -> None:
    """Refuse a corpus whose 90/5/5 splits cannot hold one training window and one evaluation window.

    Raises:
        UserError: naming the size the file has and the size it needs.
    """
    size = path.stat().st_size
    lo, hi = SPLITS["valid"]
    need = max(int(train_bytes / SPLITS["train"][1]), int(eval_bytes / (hi - lo))) + 20
    if (hi - lo) * size < eval_bytes or SPLITS["train"][1] * size < train_bytes:
        raise UserError(f"{path} holds {size:,} bytes: too small for this run's splits (90/5/5), which need at "
                        f"least {need:,} bytes (one training window of {train_bytes:,} and one evaluation window "
                        f"of {eval_bytes:,}); pass enwik8 or a larger corpus, or shorten the windows")


def download(directory: Path | None = None, url: str = URL) -> Path:
    """Fetch, unzip and check enwik8 into `directory`; returns the raw file. Idempotent.

    Raises:
        UserError: offline or unreachable (naming the URL and the --data way out), corrupt data.
    """
    directory = Path(directory or data_dir())
    raw = directory / "enwik8"
    if raw.exists():
        _check(raw)
        return raw
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "enwik8.zip"
    if not archive.exists():
        part = archive.with_suffix(".zip.part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as fh:
                shutil.copyfileobj(response, fh, 1 << 20)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            part.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            raise UserError(f"cannot download enwik8 from {url} ({reason}); download it elsewhere and pass "
                            "--data /path/to/enwik8.zip (or the unzipped enwik8)") from None
        part.replace(archive)
    _extract(archive, raw)
    _check(raw)
    return raw


def prepare(source: Path | None = None, directory: Path | None = None) -> Path:
    """The raw enwik8 file: from `source` (a zip or the raw file), else the cache, else a download."""
    if source is None:
        return download(directory)
    source = Path(source)
    if source.is_dir():
        raise UserError(f"--data {source} is a folder; give the path of enwik8.zip or of the unzipped enwik8")
    if not source.exists():
        raise UserError(f"no data set at {source}; give the path of enwik8.zip or enwik8 to --data, "
                        "or run `tcnsearch data download enwik8`")
    with open(source, "rb") as fh:
        looks_zipped = source.suffix == ".zip" or fh.read(4) == b"PK\x03\x04"
    if looks_zipped and not zipfile.is_zipfile(source):
        raise UserError(f"{source} looks like a zip archive but cannot be read; it is probably a partial "
                        "download: delete it and download again")
    if looks_zipped:
        directory = Path(directory or data_dir())
        raw = directory / "enwik8"
        # Every training run calls prepare(): unpack 100 MB again only if the archive is newer.
        if not raw.exists() or raw.stat().st_mtime < source.stat().st_mtime:
            _extract(source, raw)
    else:
        raw = source
    _check(raw)
    return raw


def load_split(path: Path, split: str) -> torch.Tensor:
    """One split as a uint8 tensor (memory-mapped: the 100 MB file is not read until used)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    data = np.memmap(path, dtype=np.uint8, mode="c")  # copy-on-write: the file is never modified
    lo, hi = (int(round(f * len(data))) for f in SPLITS[split])
    return torch.from_numpy(np.asarray(data[lo:hi]))


def train_window(data: torch.Tensor, chunk: int, generator: torch.Generator,
                 chunk_counts: tuple[int, ...] = (2, 3, 4), batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (batch, n*chunk): n consecutive chunks from a random chunk boundary."""
    n = chunk_counts[int(torch.randint(len(chunk_counts), (1,), generator=generator))]
    length = n * chunk
    n_starts = (len(data) - 1 - length) // chunk + 1
    if n_starts < 1:
        raise ValueError(f"the split has {len(data)} bytes, fewer than one window of {length} + 1")
    starts = torch.randint(n_starts, (batch,), generator=generator) * chunk
    rows = torch.stack([data[s:s + length + 1] for s in starts.tolist()]).long()
    return rows[:, :-1], rows[:, 1:]


def eval_windows(data: torch.Tensor, length: int, max_windows: int | None = None):
    """Consecutive (inputs, targets) windows of `length` bytes, each (1, length), covering the split."""
    count = (len(data) - 1) // length
    if max_windows is not None:
        count = min(count, max_windows)
    for i in range(count):
        row = data[i * length:(i + 1) * length + 1].long()[None]
        yield row[:, :-1], row[:, 1:]
