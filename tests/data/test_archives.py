"""Safe extraction: good archives unpack; traversal, absolute paths, links (chains of them
included) and damaged archives do not, and leave nothing behind."""

import io
import random
import stat
import tarfile
import zipfile

import pytest

from dgalign.cli import main
from dgalign.data.archives import UnsafeArchive, archive_kind, safe_extract
from dgalign.errors import DataError


def _zip(path, members, links=()):
    """A zip with `members` {name: bytes} and symlinks `links` [(name, target)]."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def _tar(path, members, links=(), hardlinks=(), mode="w:gz"):
    """A tar with `members` {name: bytes}, symlinks and hard links [(name, target)]."""
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for kind, pairs in ((tarfile.SYMTYPE, links), (tarfile.LNKTYPE, hardlinks)):
            for name, target in pairs:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = target
                archive.addfile(info)
    return path


GOOD = {"top/a/1.jpg": b"one", "top/b/2.jpg": b"two"}


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_good_archive_extracts(tmp_path, kind):
    make = _zip if kind == "zip" else _tar
    path = make(tmp_path / f"good.{kind}", GOOD)
    assert archive_kind(path) == kind
    assert safe_extract(path, tmp_path / "out") == 2
    assert (tmp_path / "out/top/a/1.jpg").read_bytes() == b"one"
    assert (tmp_path / "out/top/b/2.jpg").read_bytes() == b"two"


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("name", ["../evil.txt", "top/../../evil.txt", "/tmp/evil.txt", "C:/x"])
def test_traversal_and_absolute_members_rejected(tmp_path, kind, name):
    make = _zip if kind == "zip" else _tar
    path = make(tmp_path / f"bad.{kind}", {"top/ok.txt": b"ok", name: b"evil"})
    with pytest.raises(UnsafeArchive, match="unsafe path"):
        safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd", "a/../../../x", "a/1.jpg"])
def test_every_symlink_is_refused(tmp_path, kind, target):
    """No dataset ships links, so none is judged by its text: even one inside the target is
    refused (a chain of harmless-looking links can reach anywhere)."""
    path = (
        _zip(tmp_path / "link.zip", GOOD, links=[("top/link", target)])
        if kind == "zip"
        else _tar(tmp_path / "link.tar", GOOD, links=[("top/link", target)], mode="w")
    )
    with pytest.raises(UnsafeArchive, match="'top/link' is a symbolic link"):
        safe_extract(path, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


CHAIN = [("a", "."), ("l", "a/a/a/a/a/a/a/a/" + "../" * 8 + "etc")]


def _links_under(root):
    return [p for p in root.rglob("*") if p.is_symlink()]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_symlink_chain_that_reaches_etc_is_refused_and_leaves_no_link(tmp_path, kind):
    """The fault-injection case: `a -> .` and `l -> a/a/.../../etc` each look inside the
    target, yet `l` resolves to /etc once `a` exists."""
    path = (
        _zip(tmp_path / "chain.zip", GOOD, links=CHAIN)
        if kind == "zip"
        else _tar(tmp_path / "chain.tar", GOOD, links=CHAIN, mode="w")
    )
    with pytest.raises(UnsafeArchive, match="member 'a' is a symbolic link") as info:
        safe_extract(path, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert _links_under(tmp_path) == [] and list((tmp_path / "out").iterdir()) == []


def test_crafted_pacs_zip_in_downloads_is_refused_by_data_fetch(tmp_path, capsys):
    """Through the CLI: a PACS.zip whose `kfold` is a link chain out of the data folder."""
    data = tmp_path / "data"
    (data / "downloads").mkdir(parents=True)
    links = [("a", "."), ("kfold", "a/a/a/a/a/a/a/a/" + "../" * 8 + "etc")]
    _zip(data / "downloads" / "PACS.zip", {"x/readme.txt": b"hi"}, links=links)
    # --no-verify: skip the recorded checksum (which alone would refuse this file)
    code = main(["data", "fetch", "PACS", "--data-dir", str(data), "--no-verify"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("dgalign: error:") and "\n" not in err
    assert "PACS.zip: member 'a' is a symbolic link" in err
    assert not (data / "PACS").exists() and not (data / "PACS").is_symlink()
    assert _links_under(data) == [] and not list(data.glob(".*staging"))


def test_existing_link_in_the_target_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "top").symlink_to(outside)
    path = _zip(tmp_path / "good.zip", GOOD)
    with pytest.raises(UnsafeArchive, match="is a symbolic link; not extracting into it"):
        safe_extract(path, tmp_path / "out")
    assert list(outside.iterdir()) == []


def test_member_that_is_both_file_and_folder_is_refused(tmp_path):
    path = _tar(tmp_path / "clash.tar", {"top/a": b"file", "top/a/b.jpg": b"x"}, mode="w")
    with pytest.raises(UnsafeArchive, match="both a file and a folder"):
        safe_extract(path, tmp_path / "out")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_damaged_archive_is_one_line_and_extracts_nothing(tmp_path, kind):
    make = _zip if kind == "zip" else _tar
    noise = random.Random(0).randbytes(200_000)  # incompressible: the damage hits the data
    path = make(tmp_path / f"big.{kind}", {"top/a.bin": noise})
    data = bytearray(path.read_bytes())
    cut = len(data) // 2
    data[cut : cut + 64] = bytes(64)  # 64 zeroed bytes in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged") as info:
        safe_extract(path, tmp_path / "out")
    assert "\n" not in str(info.value) and not list((tmp_path / "out").iterdir())


def test_zip_member_checks_happen_before_any_write(tmp_path):
    path = _zip(tmp_path / "late.zip", {**GOOD, "../late.txt": b"x"})
    with pytest.raises(UnsafeArchive):
        safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out/top").exists()


def test_hardlink_is_refused(tmp_path):
    path = _tar(tmp_path / "hard.tar", GOOD, hardlinks=[("top/h", "../../etc/passwd")])
    with pytest.raises(UnsafeArchive, match="hard link"):
        safe_extract(path, tmp_path / "out")


def test_device_member_rejected(tmp_path):
    path = tmp_path / "dev.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("top/null")
        info.type = tarfile.CHRTYPE
        archive.addfile(info)
    with pytest.raises(UnsafeArchive, match="device"):
        safe_extract(path, tmp_path / "out")


def test_not_an_archive(tmp_path):
    page = tmp_path / "page.zip"
    page.write_text("<!DOCTYPE html><html>quota exceeded</html>")
    assert archive_kind(page) is None
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        safe_extract(page, tmp_path / "out")
