"""MS1MV3 RecordIO and the insightface verification ``.bin`` converters, on tiny releases written here in the
exact native formats (RecordIO parts with continuation flags, IRHeader, header and identity-range records;
Python 2 and Python 3 pickles of (image bytes, is-same bools))."""

import io
import os
import pickle
import shutil
import struct

import PIL.Image
import pytest

from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data import BadSampleReport, DatasetFormatError, load_native, task_features, verification_features
from faceptor_hf.data.converters.verification_bins import read_verification_bin
from faceptor_hf.data.recordio import read_record, unpack_ir_record
from faceptor_hf.data.registry import NATIVE_DATASETS

MAGIC = 0xCED7230A
MAGIC_AS_FLOAT = struct.unpack("<f", struct.pack("<I", MAGIC))[0]


def _jpeg(color, mode="RGB", size=16) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new(mode, (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


RED, GRAY, BLUE, GREEN = _jpeg((200, 30, 30)), _jpeg(128, mode="L"), _jpeg((20, 40, 220)), _jpeg((10, 200, 10))


# --- RecordIO writer (the format MXNet's recordio writes) ---------------------------------------------------------

def _recordio_record(payload: bytes) -> bytes:
    """One record: the payload split wherever the magic word sits at a 4-byte-aligned position (those 4 bytes
    dropped), each part = magic, (continuation flag << 29 | length), bytes, zero padding to 4."""
    pieces, start = [], 0
    for position in range(0, len(payload) - 3, 4):
        if payload[position:position + 4] == struct.pack("<I", MAGIC):
            pieces.append(payload[start:position])
            start = position + 4
    pieces.append(payload[start:])
    out = b""
    for index, piece in enumerate(pieces):
        flag = 0 if len(pieces) == 1 else 1 if index == 0 else 3 if index == len(pieces) - 1 else 2
        out += struct.pack("<II", MAGIC, flag << 29 | len(piece)) + piece + b"\0" * (-len(piece) % 4)
    return out


def _ir_payload(labels, record_id=0, data=b"", label_array=False) -> bytes:
    """IRHeader (flag uint32, label float32, id uint64, id2 uint64) + labels when flag > 0 + the image bytes."""
    if not label_array:
        return struct.pack("<IfQQ", 0, labels[0], record_id, 0) + data
    return struct.pack("<IfQQ", len(labels), 0.0, record_id, 0) + struct.pack(f"<{len(labels)}f", *labels) + data


# (identity labels, IRHeader id, JPEG, label array?) of image records 1..5, sorted by identity as insightface's are.
IMAGE_RECORDS = [
    ((0.0,), 1, RED, False),
    ((0.0,), 2, GRAY, False),  # grayscale JPEG
    ((1.0, MAGIC_AS_FLOAT), 3, BLUE, True),  # label array (flag 2): identity is its first float; magic inside
    ((2.0,), MAGIC, GREEN, False),  # id field holds the magic word: a two-part record; id is not the label
    ((2.0,), 77, RED, False),
]
IDENTITY_RANGES = [(1, 3), (3, 4), (4, 6)]
EXPECTED_IDENTITIES = [0, 0, 1, 2, 2]


def write_ms1mv3(folder, header=True, records=IMAGE_RECORDS, identity_count=3):
    """train.rec / train.idx / property as insightface's ms1m-retinaface-t1 ships them; returns the offsets."""
    os.makedirs(folder, exist_ok=True)
    payloads = []
    if header:
        end = len(records) + 1
        payloads.append(_ir_payload((float(end), float(end + len(IDENTITY_RANGES))), label_array=True))
    payloads += [_ir_payload(labels, record_id, data, array) for labels, record_id, data, array in records]
    if header:
        payloads += [_ir_payload((float(start), float(stop)), label_array=True) for start, stop in IDENTITY_RANGES]
    offsets, blob = [], b""
    for payload in payloads:
        offsets.append(len(blob))
        blob += _recordio_record(payload)
    with open(os.path.join(folder, "train.rec"), "wb") as handle:
        handle.write(blob)
    with open(os.path.join(folder, "train.idx"), "w") as handle:
        handle.writelines(f"{key}\t{offset}\n" for key, offset in enumerate(offsets))
    with open(os.path.join(folder, "property"), "w") as handle:
        handle.write(f"{identity_count},112,112\n")
    return offsets


def _edit_idx(folder, edit):
    path = os.path.join(folder, "train.idx")
    with open(path) as handle:
        lines = handle.read().splitlines()
    with open(path, "w") as handle:
        handle.write("".join(line + "\n" for line in edit(lines)))


@pytest.fixture()
def release(tmp_path):
    folder = str(tmp_path / "ms1m-retinaface-t1")
    return folder, write_ms1mv3(folder)


def test_recordio_reader_joins_continuation_parts(release):
    folder, offsets = release
    rec_path = os.path.join(folder, "train.rec")
    with open(rec_path, "rb") as handle:
        blob = handle.read()
        size = len(blob)
        # the fixture really holds a split record: record 4's first part carries continuation flag 1
        assert struct.unpack_from("<II", blob, offsets[4])[1] >> 29 == 1
        record = unpack_ir_record(read_record(handle, offsets[4], size, rec_path, 4), rec_path, 4, offsets[4])
        assert (record.flag, record.labels, record.id, record.data) == (0, (2.0,), MAGIC, GREEN)
        record = unpack_ir_record(read_record(handle, offsets[3], size, rec_path, 3), rec_path, 3, offsets[3])
        assert record.flag == 2 and record.labels[0] == 1.0 and record.data == BLUE
        header = unpack_ir_record(read_record(handle, offsets[0], size, rec_path, 0), rec_path, 0, offsets[0])
        assert header.labels == (6.0, 9.0) and header.data == b""


def test_ms1mv3_rows_labels_and_features(release):
    folder, _ = release
    dataset = load_native("ms1mv3", folder, "train")
    expected = task_features(make_task("recog_ms1mv3"))
    assert dataset.features == NATIVE_DATASETS["ms1mv3"].features()
    assert {name: dataset.features[name] for name in expected} == dict(expected)
    assert len(dataset) == 5  # the header and the 3 identity-range records are not images
    assert dataset["identity"] == EXPECTED_IDENTITIES
    assert dataset["record_key"] == [1, 2, 3, 4, 5]
    assert dataset["face_box"] == [None] * 5 and dataset["face_keypoints"] == [None] * 5
    images = dataset["image"]
    assert images[1].mode == "L" and images[0].mode == "RGB" and images[3].size == (16, 16)
    raw = dataset.cast_column("image", dataset.features["image"].__class__(decode=False))["image"]
    assert [item["bytes"] for item in raw] == [RED, GRAY, BLUE, GREEN, RED]


def test_ms1mv3_two_processes_give_the_same_rows(release):
    folder, _ = release
    one = load_native("ms1mv3", folder, "train")
    two = load_native("ms1mv3", folder, "train", num_proc=2)
    plain = [one.cast_column("image", one.features["image"].__class__(decode=False)),
             two.cast_column("image", two.features["image"].__class__(decode=False))]
    assert plain[0].to_list() == plain[1].to_list()


def test_ms1mv3_without_header_reads_every_record(tmp_path):
    write_ms1mv3(str(tmp_path), header=False)
    dataset = load_native("ms1mv3", str(tmp_path), "train")
    assert dataset["record_key"] == [0, 1, 2, 3, 4] and dataset["identity"] == EXPECTED_IDENTITIES


@pytest.mark.parametrize("cut", [4, 20], ids=["inside-part-header", "inside-jpeg"])
def test_ms1mv3_truncated_rec(release, cut):
    folder, offsets = release
    rec_path = os.path.join(folder, "train.rec")
    os.truncate(rec_path, offsets[5] + cut)
    with pytest.raises(DatasetFormatError) as caught:
        load_native("ms1mv3", folder, "train")
    message = str(caught.value)
    assert f"train.rec:record 5 at byte {offsets[5]}" in message and "cut short" in message
    report = BadSampleReport()
    dataset = load_native("ms1mv3", folder, "train", skip_bad=True, report=report)
    assert dataset["record_key"] == [1, 2, 3, 4] and len(report) == 1 and "record 5" in report.problems[0]


def test_ms1mv3_idx_offset_beyond_the_file(release):
    folder, _ = release
    _edit_idx(folder, lambda lines: [("2\t999999" if line.startswith("2\t") else line) for line in lines])
    with pytest.raises(DatasetFormatError, match="train.rec:record 2 at byte 999999: the index points past the end"):
        load_native("ms1mv3", folder, "train")


def test_ms1mv3_wrong_magic(release):
    folder, offsets = release
    with open(os.path.join(folder, "train.rec"), "r+b") as handle:
        handle.seek(offsets[1])
        handle.write(b"JUNK")
    with pytest.raises(DatasetFormatError, match=f"record 1 at byte {offsets[1]}: expected the RecordIO magic"):
        load_native("ms1mv3", folder, "train")


def test_ms1mv3_malformed_and_missing_idx_lines(release):
    folder, _ = release
    _edit_idx(folder, lambda lines: [("3\tthree" if line.startswith("3\t") else line) for line in lines
                                     if not line.startswith("5\t")])
    with pytest.raises(DatasetFormatError, match=r"train\.idx:4: expected two integers"):
        load_native("ms1mv3", folder, "train")
    report = BadSampleReport()
    dataset = load_native("ms1mv3", folder, "train", skip_bad=True, report=report)
    assert dataset["record_key"] == [1, 2, 4]
    assert len(report) == 3  # the malformed line, then keys 3 and 5 that no line locates
    assert "no line for image record 3" in report.problems[1] and "no line for image record 5" in report.problems[2]


def test_ms1mv3_duplicate_key_stops(release):
    folder, _ = release
    _edit_idx(folder, lambda lines: lines + [lines[2]])
    with pytest.raises(DatasetFormatError, match=r"train\.idx:10: image record 2 is listed a second time"):
        load_native("ms1mv3", folder, "train")


def test_ms1mv3_identity_outside_property_range(tmp_path):
    write_ms1mv3(str(tmp_path), identity_count=2)
    report = BadSampleReport()
    dataset = load_native("ms1mv3", str(tmp_path), "train", skip_bad=True, report=report)
    assert dataset["identity"] == [0, 0, 1]
    assert len(report) == 2 and "identity 2 is outside 0 … 1" in report.problems[0]


def test_ms1mv3_unreadable_image(tmp_path):
    records = list(IMAGE_RECORDS)
    records[2] = ((1.0,), 3, b"not a jpeg at all", False)
    write_ms1mv3(str(tmp_path), records=records)
    with pytest.raises(DatasetFormatError, match=r"train\.rec:3: image cannot be read as an image"):
        load_native("ms1mv3", str(tmp_path), "train")


def test_ms1mv3_missing_files_and_wrong_split(release, tmp_path):
    folder, _ = release
    with pytest.raises(ValueError, match="unknown split 'test'; splits: train"):
        load_native("ms1mv3", folder, "test")
    with open(os.path.join(folder, "property"), "w") as handle:
        handle.write("many,112,112\n")
    with pytest.raises(DatasetFormatError, match=r"property:1: expected '<identities>,<height>,<width>'"):
        load_native("ms1mv3", folder, "train")
    os.remove(os.path.join(folder, "train.rec"))
    with pytest.raises(DatasetFormatError, match=r"train\.rec: missing train\.rec; expected: data_dir/ holds"):
        load_native("ms1mv3", folder, "train")
    empty = str(tmp_path / "no_header")
    write_ms1mv3(empty)
    _edit_idx(empty, lambda lines: lines[1:])
    with pytest.raises(DatasetFormatError, match="no line for key 0, the header record"):
        load_native("ms1mv3", empty, "train")


# --- verification .bin pickles -------------------------------------------------------------------------------------

PAIR_IMAGES = [RED, GRAY, BLUE, GREEN]
PAIRS = 20
BIN_IMAGES = [PAIR_IMAGES[index % 4] for index in range(2 * PAIRS)]
BIN_IS_SAME = [pair % 3 == 0 for pair in range(PAIRS)]


def python2_pickle(images, is_same, protocol=2) -> bytes:
    """What Python 2's pickle.dump((images, is_same), f, protocol) writes for str images and bool flags: lists as
    EMPTY_LIST, BINPUT, MARK, items, APPENDS; every str memoized; bools NEWTRUE/NEWFALSE (protocol 2) or INT 01/00
    (protocol 1); the pair as TUPLE2 (protocol 2) or MARK ... TUPLE."""
    out = bytearray(b"\x80\x02" if protocol == 2 else b"(")
    memo = 0

    def memoize():
        nonlocal memo
        out.extend(b"q" + bytes([memo]))
        memo += 1

    out += b"]"
    memoize()
    out += b"("
    for image in images:
        out += (b"U" + bytes([len(image)]) if len(image) < 256 else b"T" + struct.pack("<i", len(image))) + image
        memoize()
    out += b"e]"
    memoize()
    out += b"("
    for flag in is_same:
        out += (b"\x88" if flag else b"\x89") if protocol == 2 else (b"I01\n" if flag else b"I00\n")
    out += b"e" + (b"\x86" if protocol == 2 else b"t")
    memoize()
    return bytes(out + b".")


def _write_bin(folder, name, data: bytes) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.bin")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.mark.parametrize("name", ["lfw", "cfp_fp", "agedb_30", "calfw", "cplfw"])
def test_verification_bin_rows(tmp_path, name):
    _write_bin(str(tmp_path), name, python2_pickle(BIN_IMAGES, BIN_IS_SAME))
    dataset = load_native(name, str(tmp_path), "test")
    assert NATIVE_DATASETS[name].task is None and NATIVE_DATASETS[name].splits == ("test",)
    assert dataset.features == verification_features()
    assert len(dataset) == PAIRS
    assert dataset["is_same"] == BIN_IS_SAME
    assert dataset["fold"] == [pair // 2 for pair in range(PAIRS)]  # i // (20 / 10)
    raw = dataset.cast_column("image_a", dataset.features["image_a"].__class__(decode=False))
    raw = raw.cast_column("image_b", dataset.features["image_b"].__class__(decode=False))
    assert [row["bytes"] for row in raw["image_a"]] == BIN_IMAGES[0::2]
    assert [row["bytes"] for row in raw["image_b"]] == BIN_IMAGES[1::2]
    assert dataset[0]["image_b"].mode == "L"


@pytest.mark.parametrize("writer", [
    lambda images, flags: python2_pickle(images, flags, protocol=1),
    lambda images, flags: pickle.dumps((images, flags), protocol=3),
    lambda images, flags: pickle.dumps((images, flags), protocol=5),
], ids=["python2-protocol1", "python3-protocol3", "python3-protocol5"])
def test_verification_bin_pickle_protocols(tmp_path, writer):
    path = _write_bin(str(tmp_path), "lfw", writer(BIN_IMAGES, BIN_IS_SAME))
    assert read_verification_bin(path) == (BIN_IMAGES, BIN_IS_SAME)


class _MakeDirectory:
    """Unpickled without restriction, this calls os.makedirs(path): harmless, and visible afterwards."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


@pytest.mark.parametrize("protocol", [2, 4])
def test_verification_bin_refuses_globals_without_running_them(tmp_path, protocol):
    target = tmp_path / "created_by_the_pickle"
    data = pickle.dumps(([_MakeDirectory(str(target)), RED], [True]), protocol=protocol)
    path = _write_bin(str(tmp_path / "release"), "lfw", data)
    with pytest.raises(DatasetFormatError) as caught:
        load_native("lfw", str(tmp_path / "release"), "test")
    assert path in str(caught.value) and "refused a reference to global os.makedirs" in str(caught.value)
    assert not target.exists()
    pickle.loads(data)  # the same bytes, unrestricted, do run the call: the fixture was armed
    assert target.is_dir()


@pytest.mark.parametrize("data, found", [
    (b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.", "global os.system (GLOBAL)"),
    (pickle.dumps(([RED, RED], [True]), protocol=2), "global _codecs.encode (GLOBAL)"),
    (pickle.dumps({"images": [RED, RED], "is_same": [True]}, protocol=4), "opcode EMPTY_DICT (builds dict)"),
    (pickle.dumps((["red", "blue"], [True]), protocol=4), "opcode SHORT_BINUNICODE 'red' (builds str)"),
    (pickle.dumps(([RED, RED], [1]), protocol=4), "opcode BININT1 1 (builds int)"),
    (pickle.dumps(([RED, RED], [None]), protocol=4), "opcode NONE (builds None)"),
    (pickle.dumps([[RED, RED], [True]], protocol=4), "found a list"),
    (pickle.dumps(([RED, RED], [True], [False]), protocol=4), "found a tuple of 3 items"),
    (pickle.dumps(([RED, [RED]], [True]), protocol=4), "image 1 of the image list is a list"),
    (pickle.dumps(([RED, RED], [b"yes"]), protocol=4), "pair 0 of the is-same list is a bytes"),
    (pickle.dumps(([RED, RED, RED], [True]), protocol=4), "3 images for 1 pairs"),
    (python2_pickle(BIN_IMAGES, BIN_IS_SAME)[:300], "not a complete pickle"),
], ids=["os-system", "python3-protocol2-bytes", "dict", "str", "int", "none", "list-not-tuple", "three-items",
        "nested-list", "bytes-flag", "count-mismatch", "truncated"])
def test_verification_bin_wrong_content(tmp_path, data, found):
    path = _write_bin(str(tmp_path), "cplfw", data)
    with pytest.raises(DatasetFormatError) as caught:
        read_verification_bin(path)
    assert str(caught.value).startswith(path) and found in str(caught.value)


def test_verification_bin_missing_file_and_wrong_split(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"agedb_30\.bin: missing agedb_30\.bin; expected: data_dir/ holds"):
        load_native("agedb_30", str(tmp_path), "test")
    with pytest.raises(ValueError, match="unknown split 'train'; splits: test"):
        load_native("agedb_30", str(tmp_path), "train")
    shutil.rmtree(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_native("agedb_30", str(tmp_path), "test")
