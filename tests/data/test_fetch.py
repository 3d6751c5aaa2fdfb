"""Fetching: downloads with resume and checksums from a local HTTP server, safe
extraction of ZIP, tar.gz and real RAR archives, datasets that appear whole or
not at all."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rars
from PIL import Image

from mirnet_pipeline.tasks.data import lol
from mirnet_pipeline.tasks.data.fetch import FetchError, download, extract, fetch_dataset
from mirnet_pipeline.tasks.data.layout import LayoutError

FILES = {
    "set/readme.txt": b"a small dataset\n",
    "set/images/a.bin": bytes(range(256)) * 64,
    "set/images/b.bin": b"\x00\x01" * 5000,
}


def make_zip(path: Path, files=FILES):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_targz(path: Path, files=FILES):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_rar(path: Path, files=FILES):
    builder = rars.RarBuilder(format="rar50", compression=3)
    for name, data in files.items():
        builder.add_bytes(data, name)
    builder.write(str(path))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_extracted(folder: Path, files=FILES):
    found = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert found == files


@pytest.mark.parametrize("maker, name", [(make_zip, "set.zip"), (make_targz, "set.tar.gz"), (make_rar, "set.rar")])
def test_download_and_extract_each_archive_kind(file_server, tmp_path, maker, name):
    archive = maker(file_server.root / name)
    if name.endswith(".rar"):
        assert archive.read_bytes().startswith(b"Rar!\x1a\x07\x01\x00")  # a real RAR5 file
    got = download(f"{file_server.url}/{name}", tmp_path / "dl" / name,
                   expected_sha256=sha(archive.read_bytes()), progress=False)
    assert got.read_bytes() == archive.read_bytes()
    extract(got, tmp_path / "out", progress=False)
    assert_extracted(tmp_path / "out")


def test_an_interrupted_transfer_resumes_with_a_range_request(file_server, tmp_path):
    archive = make_zip(file_server.root / "big.zip", {"big.bin": np.random.default_rng(0).bytes(300_000)})
    file_server.cut_after["big.zip"] = 100_000
    got = download(f"{file_server.url}/big.zip", tmp_path / "big.zip",
                   expected_sha256=sha(archive.read_bytes()), progress=False)
    assert got.read_bytes() == archive.read_bytes()
    assert file_server.requests == [("big.zip", None), ("big.zip", "bytes=100000-")]
    assert not (tmp_path / "big.zip.part").exists()


def test_server_errors_are_retried(file_server, tmp_path):
    archive = make_zip(file_server.root / "x.zip")
    file_server.fail_status["x.zip"] = [503, 500]
    download(f"{file_server.url}/x.zip", tmp_path / "x.zip", progress=False)
    assert len(file_server.requests) == 3
    assert (tmp_path / "x.zip").read_bytes() == archive.read_bytes()


def test_a_missing_file_is_not_retried_and_is_named(file_server, tmp_path):
    with pytest.raises(FetchError, match=r"/nothing.zip: HTTP 404"):
        download(f"{file_server.url}/nothing.zip", tmp_path / "n.zip", progress=False)
    assert len(file_server.requests) == 1


def test_a_bad_checksum_is_refused_and_nothing_is_kept(file_server, tmp_path):
    make_zip(file_server.root / "set.zip")
    with pytest.raises(FetchError, match="checksum mismatch .*expected sha256 0{64}"):
        download(f"{file_server.url}/set.zip", tmp_path / "set.zip", expected_sha256="0" * 64, progress=False)
    assert list(tmp_path.glob("set.zip*")) == []


def test_first_fetch_records_the_checksum_and_later_fetches_verify(file_server, tmp_path):
    archive = make_zip(file_server.root / "set.zip")
    lock = tmp_path / "sources.lock.json"
    url = f"{file_server.url}/set.zip"
    kwargs = dict(validate=lambda p: p, make_sample=None, downloads=tmp_path / "dl",
                  lock_path=lock, progress=False)
    fetch_dataset(url, tmp_path / "raw", **kwargs)
    assert json.loads(lock.read_text()) == {url: sha(archive.read_bytes())}
    assert_extracted(tmp_path / "raw")
    # the served file changes: the locked checksum refuses it, the old dataset stays
    make_zip(file_server.root / "set.zip", {**FILES, "set/extra.txt": b"new"})
    (tmp_path / "dl" / "set.zip").unlink()
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_dataset(url, tmp_path / "raw", **kwargs)
    assert_extracted(tmp_path / "raw")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def evil_zip(path: Path, name: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(name, b"gotcha")
    return path


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/etc/escape.txt"])
def test_entries_escaping_the_target_are_refused_before_anything_is_written(tmp_path, name):
    archive = evil_zip(tmp_path / "evil.zip", name)
    with pytest.raises(FetchError, match=r"evil.zip: entry .*escape.txt"):
        extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_links_are_refused_in_tar_zip_and_rar(tmp_path):
    tar_path = tmp_path / "link.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        info = tarfile.TarInfo("passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    zip_path = tmp_path / "link.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        info = zipfile.ZipInfo("passwd")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    rar_path = tmp_path / "link.rar"
    builder = rars.RarBuilder(format="rar50")
    builder.add_bytes(b"x", "a.txt")
    builder.add_unix_symlink("passwd", "/etc/passwd")
    builder.write(str(rar_path))
    for archive in (tar_path, zip_path, rar_path):
        with pytest.raises(FetchError, match=rf"{archive.name}: entry 'passwd' is a link"):
            extract(archive, tmp_path / f"out-{archive.name}", progress=False)
        assert not (tmp_path / f"out-{archive.name}").exists()


@pytest.mark.parametrize("maker, name", [(make_zip, "t.zip"), (make_targz, "t.tar.gz"), (make_rar, "t.rar")])
def test_truncated_archives_fail_with_the_archive_named_and_leave_nothing(tmp_path, maker, name):
    big = {"set/noise.bin": np.random.default_rng(1).bytes(200_000), **FILES}
    archive = maker(tmp_path / name, big)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(FetchError, match=rf"{name}"):
        fetch_dataset(str(archive), tmp_path / "raw", validate=lambda p: p, make_sample=None,
                      sha256=sha(archive.read_bytes()), lock_path=tmp_path / "lock.json", progress=False)
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def lol_files(pairs=("1", "2"), eval_pairs=("3",), size=(600, 400)) -> dict[str, bytes]:
    def png(value):
        buffer = io.BytesIO()
        Image.new("RGB", size, (value, value, value)).save(buffer, format="PNG")
        return buffer.getvalue()

    files = {}
    for part, names in (("our485", pairs), ("eval15", eval_pairs)):
        for n in names:
            files[f"lol_dataset/{part}/low/{n}.png"] = png(10)
            files[f"lol_dataset/{part}/high/{n}.png"] = png(200)
    return files


def test_a_lol_zip_from_http_becomes_a_validated_dataset(file_server, tmp_path):
    make_zip(file_server.root / "lol_dataset.zip", lol_files())
    out = fetch_dataset(f"{file_server.url}/lol_dataset.zip", tmp_path / "raw" / "lol",
                        validate=lol.validate, make_sample=None, downloads=tmp_path / "dl",
                        lock_path=tmp_path / "lock.json", progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "eval15/high/3.png", "eval15/low/3.png",
        "our485/high/1.png", "our485/high/2.png", "our485/low/1.png", "our485/low/2.png",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("lol_dataset/our485/high/2.png"), r"our485/low/2.png: low image without its high twin"),
        (lambda f: f.update({"lol_dataset/our485/low/1.png": b""}), r"our485/low/1.png: empty file"),
        (lambda f: f.update(lol_files(pairs=("1",), size=(300, 200))), r"size 300x200, expected 600x400"),
        (lambda f: f.update({"lol_dataset/our485/high/1.png": b"not a png"}),
         r"our485/high/1.png: not a readable image"),
    ],
)
def test_bad_lol_datasets_name_the_file_and_leave_nothing(tmp_path, change, message):
    files = lol_files()
    change(files)
    archive = make_zip(tmp_path / "lol.zip", files)
    with pytest.raises(LayoutError, match=message):
        fetch_dataset(str(archive), tmp_path / "raw", validate=lol.validate, make_sample=None,
                      lock_path=tmp_path / "lock.json", progress=False)
    assert not (tmp_path / "raw").exists()


def test_an_s3_archive_is_fetched_from_an_s3_compatible_server(s3_bucket, tmp_path):
    endpoint, bucket, client = s3_bucket
    archive = make_targz(tmp_path / "set.tar.gz")
    client.upload_file(str(archive), bucket, "datasets/set.tar.gz")
    uri = f"s3://{bucket}/datasets/set.tar.gz"
    lock = tmp_path / "lock.json"
    fetch_dataset(uri, tmp_path / "raw", validate=lambda p: p, make_sample=None, endpoint_url=endpoint,
                  downloads=tmp_path / "dl", lock_path=lock, progress=False)
    assert_extracted(tmp_path / "raw")
    assert json.loads(lock.read_text()) == {uri: sha(archive.read_bytes())}
    with pytest.raises(FetchError, match=rf"s3://{bucket}/datasets/none.zip: download failed"):
        fetch_dataset(f"s3://{bucket}/datasets/none.zip", tmp_path / "raw2", validate=lambda p: p,
                      make_sample=None, endpoint_url=endpoint, downloads=tmp_path / "dl",
                      lock_path=lock, progress=False)
    assert not (tmp_path / "raw2").exists()


# --- hostile servers and archives ---------------------------------------------------

def test_a_server_that_drops_every_100_kb_is_resumed_to_the_end_in_one_run(file_server, tmp_path):
    data = np.random.default_rng(1).bytes(1_000_000)
    (file_server.root / "big.bin").write_bytes(data)
    file_server.cut_every["big.bin"] = 100_000
    got = download(f"{file_server.url}/big.bin", tmp_path / "big.bin", attempts=3, progress=False)
    assert got.read_bytes() == data
    assert len(file_server.requests) == 10  # one request per 100 KB, none wasted


def test_a_download_that_makes_no_progress_gives_up_after_its_attempts(file_server, tmp_path):
    (file_server.root / "stuck.bin").write_bytes(b"x" * 50_000)
    file_server.cut_every["stuck.bin"] = 0
    with pytest.raises(FetchError, match="3 attempts in a row brought no new bytes"):
        download(f"{file_server.url}/stuck.bin", tmp_path / "stuck.bin", attempts=3, progress=False)
    assert len(file_server.requests) == 3


def test_a_truncated_first_download_is_not_locked_in_and_the_good_archive_is_accepted_later(file_server, tmp_path):
    archive = make_zip(file_server.root / "set.zip")
    file_server.no_length.add("set.zip")  # the client cannot tell that the body ended early
    file_server.truncate["set.zip"] = archive.stat().st_size // 2
    lock = tmp_path / "lock.json"
    url = f"{file_server.url}/set.zip"
    kwargs = dict(validate=lambda p: p, make_sample=None, downloads=tmp_path / "dl", lock_path=lock, progress=False)
    with pytest.raises(FetchError, match="corrupt or truncated zip archive"):
        fetch_dataset(url, tmp_path / "raw", **kwargs)
    assert not lock.exists() and not (tmp_path / "raw").exists()
    assert list((tmp_path / "dl").iterdir()) == []  # the broken download is not reused
    file_server.truncate.clear()
    fetch_dataset(url, tmp_path / "raw", **kwargs)
    assert json.loads(lock.read_text()) == {url: sha(archive.read_bytes())}
    assert_extracted(tmp_path / "raw")


def bomb(path: Path, inflated: int, prefix: str = "set/") -> Path:
    """A ZIP whose one entry of zeros inflates about a thousand times."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(f"{prefix}zeros.bin", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(inflated >> 20):
                entry.write(block)
    return path


def test_a_compression_bomb_is_stopped_while_extracting(tmp_path):
    archive = bomb(tmp_path / "bomb.zip", 256 << 20)
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(FetchError, match=r"bomb.zip: extracts to more than .* \(200 times the archive's size\)"):
        extract(archive, tmp_path / "out", progress=False)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 200 * archive.stat().st_size  # stopped at the limit, not after inflating it all


def test_the_total_size_limit_holds_for_archives_that_compress_little(tmp_path):
    archive = make_zip(tmp_path / "set.zip", {"set/noise.bin": np.random.default_rng(2).bytes(300_000)})
    with pytest.raises(FetchError, match=r"more than 100,000 bytes \(the size limit\)"):
        extract(archive, tmp_path / "out", progress=False, max_bytes=100_000)


def test_a_bomb_inside_a_valid_layout_leaves_no_dataset(tmp_path):
    files = lol_files()
    archive = make_zip(tmp_path / "lol.zip", files)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lol_dataset/our485/zeros.bin", bytes(64 << 20))
    with pytest.raises(FetchError, match="refusing to extract"):
        fetch_dataset(str(archive), tmp_path / "raw", validate=lol.validate, make_sample=None,
                      lock_path=tmp_path / "lock.json", progress=False)
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("maker, name", [(make_zip, "c.zip"), (make_targz, "c.tar.gz")])
def test_entries_that_differ_only_in_case_are_refused(tmp_path, maker, name):
    archive = maker(tmp_path / name, {"set/Image.png": b"one", "set/image.png": b"two"})
    with pytest.raises(FetchError, match=r"'set/Image.png' and 'set/image.png' differ only in case"):
        extract(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
