"""LFW pairs.txt, insightface .bin packs, MXNet RecordIO and `open_image_bytes` on real-format files."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from facedata_fixtures import (
    MAGIC,
    ir_pack,
    jpeg_bytes,
    manifest,
    recordio_frame,
    write_bin,
    write_image,
    write_recordio,
)

from facedata.errors import DataError
from facedata.images import open_image_bytes
from facedata.readers import read_dataset
from facedata.readers.recordio import read_record

LFW_PAIRS = "2\t1\nAlice\t1\t2\nAlice\t1\tBob\t3\nBob\t3\t4\nCarol\t1\tAlice\t2\n"


def lfw_raw():
    return {
        "name": "lfw",
        "layout": "lfw",
        "aligned": True,
        "files": {"images": "imgs"},
        "protocols": {"view2": {"pairs": "pairs.txt"}},
    }


def test_lfw_pairs_to_image_rows(tmp_path):
    (tmp_path / "pairs.txt").write_text(LFW_PAIRS)
    t = read_dataset(manifest(tmp_path, lfw_raw()), tmp_path)
    assert list(t.images.path) == [
        "imgs/Alice/Alice_0001.jpg",
        "imgs/Alice/Alice_0002.jpg",
        "imgs/Bob/Bob_0003.jpg",
        "imgs/Bob/Bob_0004.jpg",
        "imgs/Carol/Carol_0001.jpg",
    ]
    assert t.images.subject.tolist() == [0, 0, 1, 1, 2]
    p = t.protocols["view2"]
    assert p.level == "image" and p.pairs.tolist() == [[0, 1], [0, 2], [2, 3], [4, 1]]
    assert p.label.tolist() == [True, False, True, False]
    assert t.extra["folds"]["view2"].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "content, message",
    [
        ("2 1\nAlice 1 2\n", r"^pairs\.txt:1: header says 2 folds x 1 matched \+ 1 mismatched = 4 pairs, file has 1"),
        (
            "1 1\nAlice 1 2\nAlice 1 Bob 2 3\n",
            r"^pairs\.txt:3: expected 3 fields \(same\) or 4 fields \(different\), got 5",
        ),
        ("1 1\nAlice 1 x\nA 1 B 2\n", r"^pairs\.txt:2: image number 'x' is not an integer"),
        ("ten 300\n", r"^pairs\.txt:1: header must be `folds pairs_per_fold`"),
        ("1 1\n\n.. 1 2\nA 1 B 2\n", r"^pairs\.txt:3: person name '\.\.' is not a plain folder name"),
    ],
)
def test_lfw_bad_pairs(tmp_path, content, message):
    (tmp_path / "pairs.txt").write_text(content)
    with pytest.raises(DataError, match=message):
        read_dataset(manifest(tmp_path, lfw_raw()), tmp_path)


def test_lfw_missing_pairs_file(tmp_path):
    with pytest.raises(DataError, match=r"^pairs\.txt: file not found"):
        read_dataset(manifest(tmp_path, lfw_raw()), tmp_path)


def bin_raw():
    return {
        "name": "val",
        "layout": "bin",
        "aligned": True,
        "protocols": {"lfw": {"pairs": "lfw.bin"}, "cfp": {"pairs": "sub/cfp.bin"}},
    }


def test_bin_packs_and_image_bytes(tmp_path):
    imgs_a = [jpeg_bytes(v) for v in (10, 20, 30, 40)]
    imgs_b = [jpeg_bytes(v) for v in (50, 60)]
    write_bin(tmp_path / "lfw.bin", imgs_a, [True, False])
    (tmp_path / "sub").mkdir()
    write_bin(tmp_path / "sub" / "cfp.bin", imgs_b, [True])
    t = read_dataset(manifest(tmp_path, bin_raw()), tmp_path)
    assert list(t.images.path) == ["lfw.bin#0", "lfw.bin#1", "lfw.bin#2", "lfw.bin#3", "sub/cfp.bin#0", "sub/cfp.bin#1"]
    assert t.protocols["lfw"].pairs.tolist() == [[0, 1], [2, 3]]
    assert t.protocols["lfw"].label.tolist() == [True, False]
    assert t.protocols["cfp"].pairs.tolist() == [[4, 5]] and t.protocols["cfp"].label.tolist() == [True]
    for row, expected in zip(t.images.path, imgs_a + imgs_b):
        assert open_image_bytes(tmp_path, row) == expected
    with pytest.raises(DataError, match=r"^lfw\.bin: image index 9 out of range \(pack holds 4\)"):
        open_image_bytes(tmp_path, "lfw.bin#9")


def test_bin_pack_written_by_python2_style_numpy(tmp_path):
    # packs holding uint8 numpy buffers (and numpy bools) load too, via the restricted unpickler
    imgs = [np.frombuffer(jpeg_bytes(v), dtype=np.uint8) for v in (1, 2)]
    write_bin(tmp_path / "lfw.bin", imgs, [np.True_])
    raw = {"name": "v", "layout": "bin", "aligned": True, "protocols": {"lfw": {"pairs": "lfw.bin"}}}
    t = read_dataset(manifest(tmp_path, raw), tmp_path)
    assert t.protocols["lfw"].label.tolist() == [True]
    assert open_image_bytes(tmp_path, "lfw.bin#1") == jpeg_bytes(2)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "obj, message",
    [
        (([b"a", b"b", b"c"], [True]), r"^lfw\.bin: 3 images for 1 pairs"),
        (([b"a"],), r"^lfw\.bin: a \.bin pack must hold \(images, issame_list\)"),
        (([b"a", b"b"], [Evil()]), r"^lfw\.bin: not a readable insightface \.bin pack: .*builtins\.print"),
        (([b"a", 3], [True]), r"^lfw\.bin: image 1 is a int"),
    ],
)
def test_bin_bad_packs(tmp_path, obj, message):
    with open(tmp_path / "lfw.bin", "wb") as f:
        pickle.dump(obj, f)
    raw = {"name": "v", "layout": "bin", "aligned": True, "protocols": {"lfw": {"pairs": "lfw.bin"}}}
    with pytest.raises(DataError, match=message):
        read_dataset(manifest(tmp_path, raw), tmp_path)


def rec_raw():
    return {"name": "ms1m", "layout": "recordio", "aligned": True, "files": {"rec": "train.rec", "idx": "train.idx"}}


def test_recordio_insightface_pack(tmp_path):
    imgs = {1: jpeg_bytes(1), 2: jpeg_bytes(2), 3: jpeg_bytes(3)}
    # image 2's bytes contain the magic at an aligned offset -> a multi-part record
    imgs[2] = b"\xff\xd8" + b"\0" * 22 + struct.pack("<I", MAGIC) + b"tail"
    records = {0: ir_pack([4.0, 6.0], b"")}
    records.update({k: ir_pack(float(lab), imgs[k], id1=k) for k, lab in zip((1, 2, 3), (0, 0, 1))})
    records[4] = ir_pack([1.0, 3.0], b"")  # identity records: image ranges [1,3) and [3,4)
    records[5] = ir_pack([3.0, 4.0], b"")
    write_recordio(tmp_path / "train.rec", records)
    t = read_dataset(manifest(tmp_path, rec_raw()), tmp_path)
    assert list(t.images.path) == ["train.rec#1", "train.rec#2", "train.rec#3"]
    assert t.images.subject.tolist() == [0, 0, 1] and t.extra["header0"] == (4, 6)
    for k in (1, 2, 3):
        assert open_image_bytes(tmp_path, f"train.rec#{k}") == imgs[k]
    # record 2 really was written as two parts (first + last), and read_record reassembles it
    framed = recordio_frame(records[2])
    magic, lrec = struct.unpack_from("<II", framed, 0)
    assert (magic, lrec >> 29, lrec & (2**29 - 1)) == (MAGIC, 1, 48)  # first part: IRHeader + 24 image bytes
    assert framed.count(struct.pack("<I", MAGIC)) == 2  # the data's magic became the part boundary
    with open(tmp_path / "train.rec", "rb") as f:
        offset = int((tmp_path / "train.idx").read_text().splitlines()[2].split()[1])
        assert read_record(f, "train.rec", offset) == records[2]


def test_recordio_without_header_record_and_array_labels(tmp_path):
    records = {10: ir_pack([5.0, 0.5], jpeg_bytes(7)), 11: ir_pack(2.0, jpeg_bytes(8))}
    write_recordio(tmp_path / "train.rec", records)
    t = read_dataset(manifest(tmp_path, rec_raw()), tmp_path)
    assert list(t.images.path) == ["train.rec#10", "train.rec#11"] and t.images.subject.tolist() == [5, 2]
    assert open_image_bytes(tmp_path, "train.rec#10") == jpeg_bytes(7)


def test_recordio_errors(tmp_path):
    offsets = write_recordio(tmp_path / "train.rec", {1: ir_pack(0.0, b"abcd"), 2: ir_pack(1.0, b"efgh")})
    (tmp_path / "train.idx").write_text(f"1\t{offsets[1]}\n2\t{offsets[2] + 4}\n")
    with pytest.raises(DataError, match=rf"^train\.rec: record at byte {offsets[2] + 4}: bad magic"):
        read_dataset(manifest(tmp_path, rec_raw()), tmp_path)
    (tmp_path / "train.idx").write_text(f"1\t{offsets[1]}\n2 x\n")
    with pytest.raises(DataError, match=r"^train\.idx:2: field 2: 'x' is not an integer"):
        read_dataset(manifest(tmp_path, rec_raw()), tmp_path)
    (tmp_path / "train.idx").write_text(f"1\t{offsets[1]}\n1\t{offsets[2]}\n")
    with pytest.raises(DataError, match=r"^train\.idx:2: duplicate key 1"):
        read_dataset(manifest(tmp_path, rec_raw()), tmp_path)
    (tmp_path / "train.rec").unlink()
    with pytest.raises(DataError, match=r"^train\.rec: file not found"):
        read_dataset(manifest(tmp_path, rec_raw()), tmp_path)


def test_open_image_bytes_plain_and_escapes(tmp_path):
    write_image(tmp_path / "a" / "x.jpg", 5)
    assert open_image_bytes(tmp_path, "a/x.jpg") == (tmp_path / "a" / "x.jpg").read_bytes()
    with pytest.raises(DataError, match=r"^a/y\.jpg: image file not found"):
        open_image_bytes(tmp_path, "a/y.jpg")
    with pytest.raises(DataError, match=r"'\.\./x\.jpg'.*escapes the data root"):
        open_image_bytes(tmp_path / "a", "../x.jpg")
    with pytest.raises(DataError, match="member after '#' must be an integer"):
        open_image_bytes(tmp_path, "lfw.bin#x")
