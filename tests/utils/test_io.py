import pytest

from dgalign.utils.io import atomic_write_json, read_json_object


def test_read_json_object_returns_what_was_written(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"seed": 3, "envs": [0, 1]})
    assert read_json_object(path) == {"seed": 3, "envs": [0, 1]}


@pytest.mark.parametrize("data", [None, b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe{"])
def test_read_json_object_is_none_for_missing_damaged_or_non_object_files(tmp_path, data):
    path = tmp_path / "a.json"
    if data is not None:
        path.write_bytes(data)
    assert read_json_object(path) is None


def test_read_json_object_is_none_for_a_folder(tmp_path):
    assert read_json_object(tmp_path) is None
