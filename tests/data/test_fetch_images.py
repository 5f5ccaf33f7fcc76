"""`data fetch` / `data check` for the image benchmarks, against a local HTTP server serving
generated archives in the real sources' shapes."""

import dataclasses
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from dgalign.cli import main
from dgalign.data.archives import UnsafeArchive
from dgalign.data.fetch_images import check_image_dataset, fetch_image_dataset
from dgalign.data.manifest import MANIFEST, Remote
from dgalign.data.sources import DownloadOptions
from dgalign.errors import DataError

FAST = DownloadOptions(retries=2, backoff_s=0.01, connect_timeout_s=2, read_timeout_s=5)


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _targz_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves `files` at /<name> with Range support; a name in `cut_once` is cut after half
    its bytes on its first request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if (ranged := self.headers.get("Range", "")).startswith("bytes="):
                    start = int(ranged[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if name in server.cut_once:
                    server.cut_once.discard(name)
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def remote(self, name: str, sha256: bool = True) -> Remote:
        digest = hashlib.sha256(self.files[name]).hexdigest() if sha256 else None
        return Remote(self.url(name), name, sha256=digest)


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(5)


def _pacs_zip() -> bytes:
    spec = MANIFEST["PACS"]
    return _zip_bytes(
        {
            f"kfold/{env}/{cls}/pic_{i}.jpg": _jpeg(i)
            for env in spec.env_dirs
            for cls in spec.classes[:2]
            for i in range(2)
        }
    )


def _small_spec(name: str, **changes):
    """Manifest entry `name` expecting 2 classes x 2 images per environment."""
    spec = MANIFEST[name]
    n = len(spec.env_dirs)
    counts = {"classes": spec.classes[:2], "total": 4 * n, "env_counts": (4,) * n}
    return dataclasses.replace(spec, **{**counts, **changes})


def test_fetch_rename_layout_then_check(server, tmp_path):
    server.files["PACS.zip"] = _pacs_zip()
    spec = _small_spec("PACS", downloads=(server.remote("PACS.zip"),))
    folder = fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    assert folder == tmp_path / "PACS" and sorted(p.name for p in folder.iterdir()) == sorted(
        spec.env_dirs
    )
    assert not (tmp_path / "downloads/PACS.zip").exists()  # archives removed by default
    assert not list(tmp_path.glob(".*staging"))
    report = check_image_dataset(spec, tmp_path)
    assert report.ok and [row[2] for row in report.rows] == [4, 4, 4, 4]
    lines = []
    assert fetch_image_dataset(spec, tmp_path, FAST, log=lines.append) == folder
    assert "already exists" in lines[0]


def test_checksum_mismatch_deletes_the_download(server, tmp_path):
    server.files["PACS.zip"] = _pacs_zip()
    bad = dataclasses.replace(server.remote("PACS.zip"), sha256="0" * 64)
    spec = _small_spec("PACS", downloads=(bad,))
    with pytest.raises(DataError, match="sha256") as err:
        fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    assert "by hand" in str(err.value)
    assert not list((tmp_path / "downloads").iterdir()) and not (tmp_path / "PACS").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["PACS.zip"] = _pacs_zip()
    server.cut_once.add("PACS.zip")
    spec = _small_spec("PACS", downloads=(server.remote("PACS.zip"),))
    fetch_image_dataset(spec, tmp_path, FAST, keep_archives=True, log=lambda s: None)
    ranges = [r for name, r in server.requests if name == "PACS.zip"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(server.files['PACS.zip']) // 2}-"
    assert (tmp_path / "downloads/PACS.zip").read_bytes() == server.files["PACS.zip"]
    assert check_image_dataset(spec, tmp_path).ok


def test_resumes_a_part_file_left_by_an_earlier_run(server, tmp_path):
    data = server.files["PACS.zip"] = _pacs_zip()
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads/PACS.zip.part").write_bytes(data[:100])
    spec = _small_spec("PACS", downloads=(server.remote("PACS.zip"),))
    fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    assert server.requests == [("PACS.zip", "bytes=100-")]


def test_web_page_instead_of_archive_is_rejected(server, tmp_path):
    server.files["PACS.zip"] = b"<!DOCTYPE html><html>Google Drive quota exceeded</html>"
    spec = _small_spec("PACS", downloads=(server.remote("PACS.zip", sha256=False),))
    with pytest.raises(DataError, match="not a zip or tar"):
        fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)


def test_unreachable_source_says_how_to_place_the_data(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = Remote(f"http://127.0.0.1:{port}/PACS.zip", "PACS.zip")
    spec = dataclasses.replace(MANIFEST["PACS"], downloads=(remote,))
    with pytest.raises(DataError) as err:
        fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    message = str(err.value)
    assert "could not download" in message and "by hand" in message
    assert str(tmp_path / "PACS") in message and "art_painting" in message


def test_archive_with_traversal_member_is_not_extracted(server, tmp_path):
    server.files["PACS.zip"] = _zip_bytes({"kfold/photo/dog/a.jpg": b"x", "../../evil": b"x"})
    spec = _small_spec("PACS", downloads=(server.remote("PACS.zip"),))
    with pytest.raises(UnsafeArchive):
        fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    assert not (tmp_path / "PACS").exists() and not (tmp_path.parent / "evil").exists()


def test_terra_incognita_sorted_by_location_and_category(server, tmp_path):
    images = {f"eccv_18_all_images_sm/img{i}.jpg": _jpeg(i) for i in range(7)}
    server.files["terra.tar.gz"] = _targz_bytes(images)
    categories = [{"id": 1, "name": "bobcat"}, {"id": 2, "name": "car"}, {"id": 3, "name": "dog"}]
    locations = [38, "43", 46, 100, 38, 99, 100]  # the json mixes ints and strings
    notes = [(0, 1), (1, 3), (2, 1), (3, 3), (4, 2), (5, 1), (6, 1), (6, 3)]  # img 6 twice
    annotations = {
        "categories": categories,
        "images": [
            {"id": f"i{i}", "file_name": f"img{i}.jpg", "location": loc}
            for i, loc in enumerate(locations)
        ],
        "annotations": [{"image_id": f"i{i}", "category_id": c} for i, c in notes],
    }
    server.files["labels.json.zip"] = _zip_bytes(
        {"caltech_images_20210113.json": json.dumps(annotations).encode()}
    )
    spec = dataclasses.replace(
        MANIFEST["TerraIncognita"],
        downloads=(server.remote("terra.tar.gz"), server.remote("labels.json.zip")),
    )
    folder = fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg"))
    assert found == [
        "location_100/bobcat/img6.jpg",
        "location_100/dog/img3.jpg",
        "location_100/dog/img6.jpg",
        "location_38/bobcat/img0.jpg",  # img4 is a "car": not a kept category
        "location_43/dog/img1.jpg",
        "location_46/bobcat/img2.jpg",  # img5 is at location 99: dropped
    ]


def test_domainnet_duplicates_removed(server, tmp_path):
    spec = MANIFEST["DomainNet"]
    remotes = []
    for env in spec.env_dirs:
        members = {f"{env}/{c}/{env}_{i}.jpg": _jpeg(i) for c in spec.classes[:2] for i in range(3)}
        server.files[f"{env}.zip"] = _zip_bytes(members)
        remotes.append(server.remote(f"{env}.zip"))
    listing = (
        "clipart/The_Eiffel_Tower/clipart_0.jpg\n"
        "sketch/The_Great_Wall_of_China/sketch_2.jpg\n"
        "../x\nno/such.jpg\n"
    )
    server.files["dups.txt"] = listing.encode()
    small = _small_spec("DomainNet", downloads=tuple(remotes), env_counts=(5, 6, 6, 6, 6, 5))
    lines = []
    fetch_image_dataset(
        dataclasses.replace(small, env_counts=None, total=34),
        tmp_path,
        FAST,
        log=lines.append,
        duplicates=server.remote("dups.txt"),
    )
    assert any("removed 2 duplicate images" in line for line in lines)
    report = check_image_dataset(dataclasses.replace(small, total=34), tmp_path)
    assert report.ok and [row[2] for row in report.rows] == [5, 6, 6, 6, 6, 5]
    assert not (tmp_path / "domain_net/clipart/The_Eiffel_Tower/clipart_0.jpg").exists()


def test_data_check_cli_reports_per_environment_differences(tmp_path, capsys):
    from dgalign.data.images import write_fake_dataset

    write_fake_dataset("VLCS", tmp_path, images_per_class=2, classes_per_env=5)
    assert main(["data", "check", "vlcs", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Caltech101" in out and "1415" in out and "-1405" in out and "MISMATCH" in out
    assert "total" in out and "10729" in out and "-10689" in out


def test_md5_mismatch_is_one_line_naming_both_digests_and_no_verify_skips_it(server, tmp_path):
    server.files["PACS.zip"] = _pacs_zip()
    found = hashlib.md5(server.files["PACS.zip"]).hexdigest()
    bad = dataclasses.replace(server.remote("PACS.zip", sha256=False), md5="f" * 32)
    spec = _small_spec("PACS", downloads=(bad,))
    with pytest.raises(DataError) as err:
        fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None)
    message = str(err.value)
    assert "\n" not in message and f"md5 {found}, expected {'f' * 32}" in message
    assert "--no-verify" in message
    folder = fetch_image_dataset(spec, tmp_path, FAST, log=lambda s: None, verify=False)
    assert (folder / "photo").is_dir()


def test_manifest_records_the_public_digests():
    from dgalign.data.manifest import MANIFEST

    assert MANIFEST["PACS"].downloads[0].md5 == "fd5db817f7cdafeef3bfd525aaf9b42e"
    assert MANIFEST["VLCS"].downloads[0].md5 == "8870171eba660927d9668f4e515928e4"
    assert MANIFEST["OfficeHome"].downloads[0].md5 == "b1c14819770c4448fd5b6d931031c91c"
    zips = {r.filename: (r.size, r.sha256) for r in MANIFEST["DomainNet"].downloads}
    assert zips["quickdraw.zip"] == (
        459920701,
        "9f37df2a8c3733703dbb35ad9964202a65f675ca30137756457537536b485d84",
    )
    assert all(size and len(digest) == 64 for size, digest in zips.values())
