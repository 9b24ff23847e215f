import http.server
import json
import random
import threading
import zipfile

import pytest
import torch

from tcnsearch.cli import main
from tcnsearch.data import enwik8
from tcnsearch.errors import UserError
from tcnsearch.train import make_config, train

TEXT = (b"<page><title>Anarchism</title><text>Anarchism is a political philosophy that advocates "
        b"self-governed societies based on voluntary institutions. [[Category:Politics]]</text></page>\n")


@pytest.fixture
def corpus(tmp_path):
    """A miniature enwik8 in the real format: a zip whose member is named enwik8."""
    raw = (TEXT * 400)[:40_000]
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("enwik8", raw)
    return archive, raw


def test_prepare_split_and_windows(tmp_path):
    raw = random.Random(0).randbytes(40_000)  # every 128-byte window is unique, so its offset is known
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("enwik8", raw)
    path = enwik8.prepare(archive, tmp_path / "cache")
    assert path.read_bytes() == raw
    parts = {s: enwik8.load_split(path, s) for s in ("train", "valid", "test")}
    assert [len(p) for p in parts.values()] == [36_000, 2_000, 2_000]  # 90% / 5% / 5%
    assert bytes(torch.cat(list(parts.values())).tolist()) == raw
    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(30):
        x, y = enwik8.train_window(parts["train"], 64, g, batch=3)
        assert x.shape == y.shape and x.shape[1] in (128, 192, 256)
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next bytes
        lengths.add(x.shape[1])
        for row in x.tolist():
            start = bytes(parts["train"].tolist()).find(bytes(row))
            assert start % 64 == 0  # windows begin on chunk boundaries
    assert lengths == {128, 192, 256}
    windows = list(enwik8.eval_windows(parts["valid"], 192))
    assert len(windows) == (2_000 - 1) // 192
    assert bytes(torch.cat([x[0] for x, _ in windows]).tolist()) == bytes(parts["valid"][:len(windows) * 192].tolist())


def test_prepare_unpacks_an_archive_once(corpus, tmp_path):
    archive, raw = corpus
    path = enwik8.prepare(archive, tmp_path / "c")
    stamp = path.stat().st_mtime_ns
    path.write_bytes(raw)  # same content, newer file: a second prepare must not unpack again
    newer = path.stat().st_mtime_ns
    assert enwik8.prepare(archive, tmp_path / "c") == path and path.stat().st_mtime_ns == newer >= stamp


def test_download_over_http(corpus, tmp_path):
    archive, raw = corpus

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = archive.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/dc/enwik8.zip"
        path = enwik8.download(tmp_path / "d", url=url)
        assert path.read_bytes() == raw and (tmp_path / "d" / "enwik8.zip").exists()
        assert enwik8.download(tmp_path / "d", url="http://127.0.0.1:1/unused") == path  # cached
    finally:
        server.shutdown()


def test_offline_download_names_the_url_and_the_way_out(tmp_path):
    with pytest.raises(UserError) as err:
        enwik8.download(tmp_path, url="http://127.0.0.1:1/dc/enwik8.zip")
    assert "http://127.0.0.1:1/dc/enwik8.zip" in str(err.value) and "--data" in str(err.value)
    assert not any(tmp_path.iterdir())  # no partial file left behind


def test_corrupt_full_size_file_is_refused(tmp_path):
    fake = tmp_path / "enwik8"
    with open(fake, "wb") as fh:
        fh.truncate(enwik8.SIZE)  # 100,000,000 zero bytes: the size of enwik8, not its checksum
    with pytest.raises(UserError, match="MD5 is not enwik8's"):
        enwik8.prepare(fake)


def test_missing_and_broken_inputs(tmp_path):
    with pytest.raises(UserError, match="no data set at"):
        enwik8.prepare(tmp_path / "nope.zip")
    bad = tmp_path / "enwik8.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError):
        enwik8.prepare(bad, tmp_path / "c")


def test_train_on_enwik8_reports_bits_per_character(corpus, tmp_path):
    archive, _ = corpus
    cfg = make_config("enwik8", "tiny", {"data_path": str(archive), "steps": 40, "eval_every": 20,
                                         "batch_size": 4, "max_eval_windows": 4})
    result = train(cfg, progress=False)
    assert result.status == "completed"
    first, last = result.history
    assert last["bpc"] == pytest.approx(last["loss"] / 0.6931471805599453)
    assert last["bpc"] < first["bpc"] < 8.5  # learning from ~8 bits (uniform over 256 bytes)


def test_data_commands(corpus, tmp_path, capsys):
    archive, raw = corpus
    assert main(["data", "prepare", "enwik8", "--data", str(archive), "--dir", str(tmp_path / "p"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == len(raw)
    out = tmp_path / "ar.pt"
    assert main(["data", "generate", "assoc-recall", "--out", str(out), "--examples", "10", "--seq-len", "9"]) == 0
    saved = torch.load(out)
    assert saved["inputs"].shape == (10, 9)
    assert main(["data", "prepare", "enwik8", "--data", str(tmp_path / "missing.zip")]) == 2
    assert "no data set at" in capsys.readouterr().err
    assert main(["train", "enwik8", "--data", str(tmp_path / "missing.zip")]) == 2
