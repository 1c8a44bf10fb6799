"""Property-based fuzzing of every reader's line parser (facedata/readers/).

Well-formed generated input parses to exactly the values that generated it; one corrupted line is
reported as a DataError naming that file and line; arbitrary or garbled lines/bytes either parse or
raise DataError naming the file, never another exception type and never a hang.
"""

from __future__ import annotations

import csv
import io
import pickle
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from facedata_fixtures import ir_pack, manifest, recordio_frame
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from facedata.errors import DataError
from facedata.readers import read_dataset
from facedata.readers._text import WHITESPACE, check_field, read_columns
from facedata.readers.bin_pack import load_pack
from facedata.readers.lfw import parse_pairs_txt
from facedata.readers.recordio import read_idx, read_record, unpack_payload

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_FILES = settings(FUZZ, max_examples=25)
"""For the tests that write a whole dataset per example (keeps the file under ~15 s on 2 cores)."""

# tokens as found in real files: no whitespace, no path separators; quotes, '#' and commas included
TOKEN_CHARS = string.ascii_letters + string.digits + "._-#\"'()[]+,"
token = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
plain_token = st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..")
)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
garbage_text = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=string.printable, max_size=40),
        st.lists(st.one_of(token, int64.map(str), finite.map(repr)), max_size=5).map(" ".join),
    ),
    max_size=8,
).map("\n".join)
garbage_bytes = st.one_of(st.binary(max_size=300), garbage_text.map(lambda s: s.encode("utf-8", "surrogatepass")))


def parses_or_data_error(fn, display: str):
    """fn()'s value, or None when it raised a DataError naming `display`; any other exception fails."""
    try:
        return fn()
    except DataError as exc:
        assert exc.path is not None and display in exc.path, str(exc)
        return None


def expect_line_error(fn, display: str, line: int) -> DataError:
    with pytest.raises(DataError) as err:
        fn()
    assert err.value.path == display and err.value.line == line, str(err.value)
    return err.value


def write_lines(path: Path, lines: list[str], blanks: list[int]) -> list[int]:
    """Write `lines` with blank lines inserted before the given indices; return each line's 1-based number."""
    out, numbers = [], []
    for k, line in enumerate(lines):
        out.extend([""] * blanks.count(k))
        out.append(line)
        numbers.append(len(out))
    path.write_text("".join(f"{x}\n" for x in out), encoding="utf-8")
    return numbers


# --- _text helpers -------------------------------------------------------------------------------


@FUZZ
@given(
    value=st.one_of(st.text(max_size=30), int64.map(str), finite.map(repr)),
    kind=st.sampled_from(["str", "int", "float"]),
)
def test_check_field_returns_a_reason_or_none(value, kind):
    why = check_field(value, kind)
    assert why is None or isinstance(why, str)


rows3 = st.lists(st.tuples(token, int64, finite), min_size=1, max_size=12)


def _join(fields: list[str], sep: str, gaps: list[str]) -> str:
    """Fields joined by `sep` (","), or by the whitespace runs `gaps` (sep WHITESPACE, with `gaps[-1]`
    as leading and trailing whitespace)."""
    if sep == ",":
        return ",".join(fields)
    return gaps[-1] + "".join(f + g for f, g in zip(fields[:-1], gaps)) + fields[-1] + gaps[-1]


@FUZZ
@given(
    rows=rows3,
    sep=st.sampled_from([WHITESPACE, ","]),
    gaps=st.lists(st.sampled_from([" ", "  ", "\t", " \t "]), min_size=2, max_size=2).map(lambda g: g + [""])
    | st.lists(st.sampled_from([" ", "\t"]), min_size=3, max_size=3),
    blanks=st.lists(st.integers(0, 12), max_size=3),
)
def test_read_columns_round_trips(rows, sep, gaps, blanks):
    rows = [(t.replace(",", "_"), i, x) for t, i, x in rows]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.txt"
        write_lines(path, [_join([t, str(i), repr(x)], sep, gaps) for t, i, x in rows], blanks)
        df = read_columns(path, "f.txt", ("str", "int", "float"), sep=sep)
    assert df[0].tolist() == [t for t, _, _ in rows]
    assert df[1].tolist() == [i for _, i, _ in rows]
    np.testing.assert_array_equal(df[2].to_numpy(), np.asarray([x for _, _, x in rows], dtype=np.float64))


CORRUPTIONS = (
    "drop",
    "extra",
    "int_word",
    "float_word",
    "int_float",
    "float_nan",
    "int_underscore",  # Python's int() takes these three; pandas does not
    "int_unicode",
    "int_huge",
    "float_unicode",
)


def corrupt(fields: list[str], how: str, int_col: int, float_col: int) -> list[str]:
    f = list(fields)
    if how == "drop":
        return f[:-1]
    if how == "extra":
        return f + ["9"]
    if how == "int_word":
        f[int_col] = "x1"
    elif how == "float_word":
        f[float_col] = "1.2.3"
    elif how == "int_float":
        f[int_col] = "1.5"
    elif how == "float_nan":
        f[float_col] = "nan"
    elif how == "int_underscore":
        f[int_col] = "1_0"
    elif how == "int_unicode":
        f[int_col] = "\u0661"
    elif how == "int_huge":
        f[int_col] = "9" * 25
    elif how == "float_unicode":
        f[float_col] = "\u0661.5"
    return f


@FUZZ
@given(
    rows=rows3,
    sep=st.sampled_from([WHITESPACE, ","]),
    blanks=st.lists(st.integers(0, 12), max_size=3),
    data=st.data(),
)
def test_read_columns_names_the_corrupted_line(rows, sep, blanks, data):
    rows = [(t.replace(",", "_"), i, x) for t, i, x in rows]
    k = data.draw(st.integers(0, len(rows) - 1))
    how = data.draw(st.sampled_from(CORRUPTIONS))
    joiner = "," if sep == "," else " "
    lines = [joiner.join([t, str(i), repr(x)]) for t, i, x in rows]
    lines[k] = joiner.join(corrupt(lines[k].split(joiner), how, 1, 2))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.txt"
        numbers = write_lines(path, lines, blanks)
        expect_line_error(lambda: read_columns(path, "f.txt", ("str", "int", "float"), sep=sep), "f.txt", numbers[k])


@FUZZ
@given(content=garbage_bytes, sep=st.sampled_from([WHITESPACE, ","]), header=st.booleans())
def test_read_columns_on_garbage(content, sep, header):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.txt"
        path.write_bytes(content)
        df = parses_or_data_error(lambda: read_columns(path, "g.txt", ("str", "int", "float"), sep, header), "g.txt")
        from_bytes = parses_or_data_error(
            lambda: read_columns(path, "g.txt", ("str", "int", "float"), sep, header, data=content), "g.txt"
        )
    assert (df is None) == (from_bytes is None)
    if df is not None:
        assert df.shape[1] == 3 and df.equals(from_bytes)


# --- insightface IJB -----------------------------------------------------------------------------

ijb_rows = st.lists(
    st.tuples(
        plain_token,
        st.integers(0, 5),
        st.integers(0, 1000),
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=11, max_size=11),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda r: r[0],
)


def write_ijb_files(root: Path, rows, pairs) -> tuple[dict, dict[str, list[str]]]:
    lines = {
        "meta/tid.txt": [f"{n} {t} {m}" for n, t, m, _ in rows],
        "meta/pts.txt": [" ".join([n, *map(repr, v)]) for n, _, _, v in rows],
        "meta/pairs.txt": [f"{a} {b} {c}" for a, b, c in pairs],
    }
    (root / "meta").mkdir(parents=True, exist_ok=True)
    raw = {
        "name": "ijb",
        "layout": "insightface_ijb",
        "aligned": False,
        "files": {"images": "loose_crop", "face_tid_mid": "meta/tid.txt", "name_5pts_score": "meta/pts.txt"},
        "protocols": {"v": {"pairs": "meta/pairs.txt"}},
    }
    return raw, lines


def ijb_pairs(rows, data) -> list[tuple[int, int, int]]:
    templates = sorted({t for _, t, _, _ in rows})
    tpl = st.sampled_from(templates)
    return data.draw(st.lists(st.tuples(tpl, tpl, st.integers(0, 1)), min_size=1, max_size=6))


@FUZZ_FILES
@given(rows=ijb_rows, data=st.data())
def test_insightface_ijb_round_trips(rows, data):
    pairs = ijb_pairs(rows, data)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        raw, lines = write_ijb_files(root, rows, pairs)
        for rel, ls in lines.items():
            write_lines(root / rel, ls, [])
        t = read_dataset(manifest(root, raw), root)
    assert list(t.images.path) == [f"loose_crop/{n}" for n, _, _, _ in rows]
    assert t.images.template.tolist() == [r[1] for r in rows] and t.images.media.tolist() == [r[2] for r in rows]
    values = np.asarray([v for *_, v in rows], dtype=np.float64)
    np.testing.assert_array_equal(t.images.landmarks.reshape(-1, 10), values[:, :10].astype(np.float32))
    np.testing.assert_array_equal(t.images.detector_score, values[:, 10].astype(np.float32))
    assert t.protocols["v"].pairs.tolist() == [[a, b] for a, b, _ in pairs]
    assert t.protocols["v"].label.tolist() == [bool(c) for _, _, c in pairs]


@FUZZ_FILES
@given(rows=ijb_rows, data=st.data())
def test_insightface_ijb_names_the_corrupted_line(rows, data):
    pairs = ijb_pairs(rows, data)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        raw, lines = write_ijb_files(root, rows, pairs)
        rel = data.draw(st.sampled_from(sorted(lines)))
        k = data.draw(st.integers(0, len(lines[rel]) - 1))
        fields = lines[rel][k].split(" ")
        if rel == "meta/pairs.txt":
            how = data.draw(st.sampled_from(["drop", "extra", "int_word", "label", "unknown"]))
            if how == "label":
                fields[2] = "2"
            elif how == "unknown":
                fields[0] = "-7"  # templates are 0..5
            else:
                fields = corrupt(fields, how, 1, 1)
        elif rel == "meta/tid.txt":
            fields = corrupt(fields, data.draw(st.sampled_from(["drop", "extra", "int_word", "int_float"])), 1, 1)
        else:
            fields = corrupt(fields, data.draw(st.sampled_from(["drop", "extra", "float_word", "float_nan"])), 1, 3)
        lines[rel][k] = " ".join(fields)
        blanks = data.draw(st.lists(st.integers(0, 8), max_size=2))
        numbers = {r: write_lines(root / r, ls, blanks if r == rel else []) for r, ls in lines.items()}
        expect_line_error(lambda: read_dataset(manifest(root, raw), root), rel, numbers[rel][k])


@FUZZ_FILES
@given(which=st.sampled_from(["meta/tid.txt", "meta/pts.txt", "meta/pairs.txt"]), content=garbage_bytes)
def test_insightface_ijb_on_garbage(which, content):
    rows = [("a.jpg", 1, 1, [1.0] * 11), ("b.jpg", 2, 2, [2.0] * 11)]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        raw, lines = write_ijb_files(root, rows, [(1, 2, 0)])
        for rel, ls in lines.items():
            write_lines(root / rel, ls, [])
        (root / which).write_bytes(content)
        try:
            read_dataset(manifest(root, raw), root)
        except DataError as exc:  # the garbled file, or the file it is compared with
            assert exc.path in ("meta/tid.txt", "meta/pts.txt", "meta/pairs.txt"), str(exc)


@FUZZ
@given(content=garbage_bytes)
def test_template_subject_csv_on_garbage(content):
    from facedata.readers.insightface_ijb import read_template_subject_csv

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.csv"
        path.write_bytes(b"TEMPLATE_ID,SUBJECT_ID,X\n" + content)
        parses_or_data_error(lambda: read_template_subject_csv(path, "g.csv"), "g.csv")


# --- NIST IJB-C ----------------------------------------------------------------------------------

nist_rows = st.lists(
    st.tuples(st.integers(0, 6), plain_token.map(lambda s: f"img/{s}.jpg")),
    min_size=1,
    max_size=8,
    unique_by=lambda r: r[1],
)


def write_nist(root: Path, enroll, verif, match) -> dict:
    for name, rows in (("enroll.csv", enroll), ("verif.csv", verif)):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["TEMPLATE_ID", "SUBJECT_ID", "FILENAME", "OTHER"])
        w.writerows([[t, 100 + t, f, "z"] for t, f in rows])
        (root / name).write_text(buf.getvalue())
    (root / "match.csv").write_text("".join(f"{a},{b}\n" for a, b in match))
    return {
        "name": "nist",
        "layout": "nist_ijbc",
        "aligned": True,
        "files": {"images": "aligned", "enroll_templates": "enroll.csv", "verif_templates": "verif.csv"},
        "protocols": {"m": {"pairs": "match.csv"}},
    }


@FUZZ_FILES
@given(enroll=nist_rows, verif=nist_rows, data=st.data())
def test_nist_ijbc_round_trips(enroll, verif, data):
    templates = sorted({t for t, _ in enroll + verif})
    match = data.draw(st.lists(st.tuples(st.sampled_from(templates), st.sampled_from(templates)), max_size=6))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t = read_dataset(manifest(root, write_nist(root, enroll, verif, match)), root)
    rows = enroll + verif
    assert list(t.images.path) == [f"aligned/{f}" for _, f in rows]
    assert t.images.template.tolist() == [r for r, _ in rows] and t.images.subject.tolist() == [
        100 + r for r, _ in rows
    ]
    assert t.protocols["m"].pairs.tolist() == [[a, b] for a, b in match]
    assert t.protocols["m"].label.tolist() == [a == b for a, b in match]


@FUZZ_FILES
@given(which=st.sampled_from(["enroll.csv", "verif.csv", "match.csv"]), content=garbage_bytes, header=st.booleans())
def test_nist_ijbc_on_garbage(which, content, header):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        raw = write_nist(root, [(1, "img/1.jpg")], [(2, "img/2.jpg")], [(1, 2)])
        prefix = b"TEMPLATE_ID,SUBJECT_ID,FILENAME\n" if header and which != "match.csv" else b""
        (root / which).write_bytes(prefix + content)
        try:
            read_dataset(manifest(root, raw), root)
        except DataError as exc:  # the garbled file, or one checked against it
            assert exc.path is not None and any(f in exc.path for f in ("enroll", "verif", "match")), str(exc)


# --- LFW pairs.txt -------------------------------------------------------------------------------

lfw_name = plain_token
lfw_index = st.integers(1, 9999)


@FUZZ
@given(folds=st.integers(1, 3), per=st.integers(0, 3), data=st.data())
def test_lfw_pairs_round_trip(folds, per, data):
    same = st.tuples(lfw_name, lfw_index, lfw_index)
    diff = st.tuples(lfw_name, lfw_index, lfw_name, lfw_index)
    expected, lines = [], [f"{folds}\t{per}"]
    for _ in range(folds):
        for n, i, j in data.draw(st.lists(same, min_size=per, max_size=per)):
            lines.append(f"{n}\t{i}\t{j}")
            expected.append(((n, i, n, j), True))
        for a, i, b, j in data.draw(st.lists(diff, min_size=per, max_size=per)):
            lines.append(f"{a}\t{i}\t{b}\t{j}")
            expected.append(((a, i, b, j), False))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.txt"
        write_lines(path, lines, data.draw(st.lists(st.integers(0, len(lines)), max_size=2)))
        pairs, genuine, fold = parse_pairs_txt(path, "pairs.txt")
    assert pairs == [p for p, _ in expected] and genuine.tolist() == [g for _, g in expected]
    assert fold.tolist() == [k for k in range(folds) for _ in range(2 * per)]


@FUZZ
@given(per=st.integers(1, 3), data=st.data())
def test_lfw_pairs_names_the_corrupted_line(per, data):
    lines = [f"1 {per}"] + [f"p{k} 1 2" for k in range(per)] + [f"p{k} 1 q{k} 3" for k in range(per)]
    k = data.draw(st.integers(1, len(lines) - 1))
    fields = lines[k].split()
    how = data.draw(st.sampled_from(["zero", "word", "fields", "name"]))
    if how == "zero":
        fields[1] = "0"
    elif how == "word":
        fields[-1] = "x"
    elif how == "fields":
        fields = fields[:2]
    else:
        fields[0] = ".."
    lines[k] = " ".join(fields)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.txt"
        numbers = write_lines(path, lines, data.draw(st.lists(st.integers(0, len(lines)), max_size=2)))
        expect_line_error(lambda: parse_pairs_txt(path, "pairs.txt"), "pairs.txt", numbers[k])


@FUZZ
@given(content=garbage_bytes)
@example(content="1 \u00b2\n".encode())  # str.isdigit() is True, int() fails
@example(content="1 1\na \u0661 2\n".encode())
def test_lfw_pairs_on_garbage(content):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.txt"
        path.write_bytes(content)
        parses_or_data_error(lambda: parse_pairs_txt(path, "pairs.txt"), "pairs.txt")


# --- table (CSV lists) ---------------------------------------------------------------------------

table_rows = st.lists(
    st.tuples(token.map(lambda s: f"d/{s}"), st.integers(-5, 50), st.integers(0, 4)),
    min_size=1,
    max_size=8,
    unique_by=lambda r: r[0],
)


def write_csv(path: Path, header: list[str], rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue())


def table_manifest(level: str = "image") -> dict:
    return {
        "name": "t",
        "layout": "table",
        "aligned": True,
        "files": {"list": "list.csv"},
        "protocols": {"p": {"pairs": "pairs.csv", "level": level}},
    }


@FUZZ_FILES
@given(rows=table_rows, data=st.data())
def test_table_round_trips(rows, data):
    paths = [p for p, _, _ in rows]
    pairs = data.draw(
        st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(paths), st.integers(0, 1)), max_size=6)
    )
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_csv(root / "list.csv", ["path", "subject", "template"], rows)
        write_csv(root / "pairs.csv", ["left", "right", "label"], pairs)
        t = read_dataset(manifest(root, table_manifest()), root)
    assert list(t.images.path) == paths
    assert t.images.subject.tolist() == [s for _, s, _ in rows]
    assert t.images.template.tolist() == [m for _, _, m in rows]
    assert t.protocols["p"].pairs.tolist() == [[paths.index(a), paths.index(b)] for a, b, _ in pairs]
    assert t.protocols["p"].label.tolist() == [bool(c) for _, _, c in pairs]


@FUZZ_FILES
@given(
    which=st.sampled_from(["list.csv", "pairs.csv"]),
    content=garbage_bytes,
    level=st.sampled_from(["image", "template"]),
)
def test_table_on_garbage(which, content, level):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_csv(root / "list.csv", ["path", "subject", "template"], [["a.jpg", 1, 1], ["b.jpg", 2, 2]])
        write_csv(root / "pairs.csv", ["left", "right", "label"], [["a.jpg", "b.jpg", 0]])
        header = b"path,subject,template\n" if which == "list.csv" else b"left,right,label\n"
        (root / which).write_bytes(header + content)
        try:
            read_dataset(manifest(root, table_manifest(level)), root)
        except DataError as exc:  # the garbled file, or the pairs checked against a garbled list
            assert exc.path in ("list.csv", "pairs.csv"), str(exc)


# --- folder pairs CSV ----------------------------------------------------------------------------


def folder_root(root: Path, tree: dict[str, list[str]]) -> list[str]:
    paths = []
    for ident in sorted(tree):
        for f in sorted(tree[ident]):
            (root / "faces" / ident).mkdir(parents=True, exist_ok=True)
            (root / "faces" / ident / f"{f}.jpg").write_bytes(b"")
            paths.append(f"faces/{ident}/{f}.jpg")
    return paths


visible_token = plain_token.filter(lambda s: not s.startswith("."))  # the folder reader skips hidden entries
folder_tree = st.dictionaries(
    visible_token,
    st.lists(visible_token, min_size=1, max_size=3, unique=True),
    min_size=1,
    max_size=3,
)
FOLDER_RAW = {
    "name": "f",
    "layout": "folder",
    "aligned": True,
    "files": {"images": "faces"},
    "protocols": {"p": {"pairs": "pairs.csv"}},
}


@FUZZ_FILES
@given(tree=folder_tree, data=st.data())
def test_folder_pairs_round_trip(tree, data):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        try:
            paths = folder_root(root, tree)
        except OSError:  # case-insensitive file system folding two generated names
            return
        pairs = data.draw(
            st.lists(
                st.tuples(st.sampled_from(paths), st.sampled_from(paths), st.integers(0, 1)), min_size=1, max_size=6
            )
        )
        write_lines(root / "pairs.csv", [f"{a},{b},{c}" for a, b, c in pairs], [])
        t = read_dataset(manifest(root, FOLDER_RAW), root)
    got = list(t.images.path)
    assert got == paths
    assert t.protocols["p"].pairs.tolist() == [[paths.index(a), paths.index(b)] for a, b, _ in pairs]
    assert t.protocols["p"].label.tolist() == [bool(c) for _, _, c in pairs]


@FUZZ_FILES
@given(content=garbage_bytes)
def test_folder_pairs_on_garbage(content):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        folder_root(root, {"a": ["1", "2"]})
        (root / "pairs.csv").write_bytes(content)
        parses_or_data_error(lambda: read_dataset(manifest(root, FOLDER_RAW), root), "pairs.csv")


# --- .bin packs ----------------------------------------------------------------------------------

images_and_flags = st.integers(0, 4).flatmap(
    lambda n: st.tuples(
        st.lists(st.binary(max_size=20), min_size=2 * n, max_size=2 * n),
        st.lists(st.booleans(), min_size=n, max_size=n),
    )
)


@FUZZ
@given(pack=images_and_flags, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), as_arrays=st.booleans())
def test_bin_pack_round_trips(pack, protocol, as_arrays):
    images, issame = pack
    stored = [np.frombuffer(b, dtype=np.uint8) for b in images] if as_arrays else [bytearray(b) for b in images]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.bin"
        path.write_bytes(pickle.dumps((stored, np.asarray(issame, dtype=bool) if as_arrays else issame), protocol))
        got, flags = load_pack(path, "p.bin")
    assert got == images and flags.tolist() == issame


@FUZZ
@given(pack=images_and_flags, data=st.data())
def test_bin_pack_on_garbage(pack, data):
    good = pickle.dumps(pack, protocol=data.draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))
    content = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.integers(0, len(good)).map(lambda k: good[:k]),
            st.lists(st.tuples(st.integers(0, max(len(good) - 1, 0)), st.integers(0, 255)), min_size=1, max_size=4).map(
                lambda edits: bytes(_edit(good, edits))
            ),
        )
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.bin"
        path.write_bytes(content)
        parses_or_data_error(lambda: load_pack(path, "p.bin"), "p.bin")


def _edit(data: bytes, edits) -> bytearray:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return out


# --- RecordIO ------------------------------------------------------------------------------------


@FUZZ
@given(payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=5))
def test_recordio_frames_round_trip(payloads):
    buf, offsets = b"", []
    for p in payloads:
        offsets.append(len(buf))
        buf += recordio_frame(p)
    f = io.BytesIO(buf)
    assert [read_record(f, "r.rec", o) for o in offsets] == payloads


@FUZZ
@given(labels=st.lists(st.integers(0, 2**20).map(float), min_size=1, max_size=4), image=st.binary(max_size=30))
def test_recordio_header_round_trips(labels, image):
    flag, got, _, _, body = unpack_payload(ir_pack(labels, image, 3, 4), "r.rec", "record 1")
    assert got.tolist() == labels and body == image and flag == (0 if len(labels) == 1 else len(labels))


@FUZZ
@given(content=st.binary(max_size=120), offset=st.integers(0, 130))
def test_recordio_record_and_header_on_garbage(content, offset):
    payload = parses_or_data_error(lambda: read_record(io.BytesIO(content), "r.rec", offset), "r.rec")
    parses_or_data_error(lambda: unpack_payload(content, "r.rec", "record 0"), "r.rec")
    if payload is not None:
        parses_or_data_error(lambda: unpack_payload(payload, "r.rec", "record 0"), "r.rec")


@FUZZ
@given(entries=st.dictionaries(int64, st.integers(0, 2**63 - 1), max_size=8), data=st.data())
def test_recordio_idx_round_trips(entries, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.idx"
        sep = data.draw(st.sampled_from(["\t", " ", " \t"]))
        write_lines(
            path, [f"{k}{sep}{o}" for k, o in entries.items()], data.draw(st.lists(st.integers(0, 8), max_size=2))
        )
        keys, offsets = read_idx(path, "t.idx")
    assert keys.tolist() == list(entries) and offsets.tolist() == list(entries.values())


idx_lines = st.lists(st.tuples(int64, int64), min_size=1, max_size=4).map(
    lambda rows: "".join(f"{k}\t{o}\n" for k, o in rows).encode()
)


@FUZZ_FILES
@given(which=st.sampled_from(["rec", "idx"]), content=st.one_of(garbage_bytes, idx_lines))
@example(which="idx", content=f"1\t{2**63 - 5}\n".encode())  # offset + header length overflows int64
def test_recordio_pack_on_garbage(which, content):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        rec = recordio_frame(ir_pack(1, b"img"))
        (root / "t.rec").write_bytes(rec + recordio_frame(ir_pack(2, b"img2")))
        (root / "t.idx").write_text(f"0\t0\n1\t{len(rec)}\n")
        (root / f"t.{which}").write_bytes(content)
        raw = {"name": "r", "layout": "recordio", "aligned": True, "files": {"rec": "t.rec", "idx": "t.idx"}}
        try:
            read_dataset(manifest(root, raw), root)
        except DataError as exc:
            assert exc.path in ("t.rec", "t.idx"), str(exc)
