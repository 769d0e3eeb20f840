"""Native-release converters of CelebAMask-HQ, LaPa, MORPH II and UTKFace on tiny fixtures in each release's
exact layout (written here), with the awkward cases: missing files, a grayscale JPEG, malformed lines, a wrong
landmark count, an unparseable file name."""

import hashlib
import logging
import os
import re

import numpy as np
import PIL.Image
import pytest

from faceptor_hf.configuration_faceptor import make_task
from faceptor_hf.data import NATIVE_DATASETS, BadSampleReport, DatasetFormatError, load_native, task_features
from faceptor_hf.data.converters import age_morph2, age_utkface


def write_jpeg(path, size=(16, 16), mode="RGB", value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.new(mode, size, value if mode == "L" else (value, value // 2, 200)).save(path, format="JPEG")


def write_png(path, pixels, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = PIL.Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    (image.convert(mode) if mode else image).save(path, format="PNG")


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def assert_schema(dataset, task_name, extra):
    common = task_features(make_task(task_name))
    assert dataset.column_names == list(common) + list(extra)
    for column, feature in common.items():
        assert dataset.features[column] == feature


def assert_bad(name, data_dir, split, expected_rows, *expected_problems, **options):
    """Stops at the first problem naming it; with ``skip_bad`` keeps ``expected_rows`` and counts the problems."""
    with pytest.raises(DatasetFormatError, match=expected_problems[0]):
        load_native(name, str(data_dir), split, **options)
    report = BadSampleReport()
    dataset = load_native(name, str(data_dir), split, skip_bad=True, report=report, **options)
    assert len(dataset) == expected_rows
    assert len(report) == len(expected_problems)
    for problem, pattern in zip(report.problems, expected_problems):
        assert re.search(pattern, problem), (pattern, problem)
    return dataset


def test_all_four_are_registered_with_their_splits():
    assert NATIVE_DATASETS["celebamask-hq"].splits == ("train", "validation", "test", "trainval")
    assert NATIVE_DATASETS["lapa"].splits == ("train", "validation", "test", "trainval")
    assert NATIVE_DATASETS["morph2"].splits == ("train", "test")
    assert NATIVE_DATASETS["utkface"].splits == ("train", "test")
    assert NATIVE_DATASETS["morph2"].options == ("detect_keypoints", "split_seed")
    assert NATIVE_DATASETS["utkface"].options == ()


# ---------------------------------------------------------------------------------------------------------------
# CelebAMask-HQ: 16 x 16 photos with 8 x 8 part masks (the release's 1024 / 512 ratio)
# ---------------------------------------------------------------------------------------------------------------
def part_mask(*cells):
    """8 x 8 binary part mask (255 inside) covering the (row slice, column slice) cells."""
    pixels = np.zeros((8, 8), np.uint8)
    for rows, columns in cells:
        pixels[rows, columns] = 255
    return pixels


@pytest.fixture
def celebamask_hq(tmp_path):
    return write_celebamask_hq(tmp_path)


def write_celebamask_hq(tmp_path):
    root = tmp_path / "CelebAMask-HQ"
    # id -> CelebA file; partition: 000001/000002 train, 162771 validation, 182638/200000 test
    mapping = {0: "000001.jpg", 1: "000002.jpg", 2: "162771.jpg", 2001: "182638.jpg", 29999: "200000.jpg"}
    write_text(root / "CelebA-HQ-to-CelebA-mapping.txt", "idx         orig_idx    orig_file   \n" + "".join(
        f"{hq_id:<12}{int(name[:-4]) - 1:<12}{name}\n" for hq_id, name in mapping.items()))
    write_text(tmp_path / "Eval" / "list_eval_partition.txt",
               "000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n162771.jpg 1\n182638.jpg 2\n200000.jpg 2\n")
    for hq_id in (0, 2, 2001):
        write_jpeg(root / "CelebA-HQ-img" / f"{hq_id}.jpg")
    write_jpeg(root / "CelebA-HQ-img" / "1.jpg", mode="L")  # grayscale JPEG; id 29999 has no image
    anno = root / "CelebAMask-HQ-mask-anno"
    # id 0: neck under skin, nose on skin, hair over skin's top row, the subject's left ear (image right)
    write_png(anno / "0" / "00000_neck.png", part_mask((slice(5, 8), slice(2, 6))))
    write_png(anno / "0" / "00000_skin.png", part_mask((slice(1, 6), slice(1, 7))))
    write_png(anno / "0" / "00000_nose.png", part_mask((slice(3, 4), slice(3, 5))))
    write_png(anno / "0" / "00000_hair.png", part_mask((slice(0, 2), slice(0, 8))))
    write_png(anno / "0" / "00000_l_ear.png", part_mask((slice(2, 4), slice(7, 8))), mode="RGB")
    # id 1: skin only (every other part file missing)
    write_png(anno / "0" / "00001_skin.png", part_mask((slice(0, 8), slice(0, 8))))
    write_png(anno / "0" / "00002_skin.png", part_mask((slice(2, 6), slice(2, 6))))
    write_png(anno / "1" / "02001_skin.png", part_mask((slice(0, 4), slice(0, 4))))  # id 2001: folder 2001 // 2000
    write_png(anno / "14" / "29999_skin.png", part_mask((slice(0, 4), slice(0, 4))))
    return tmp_path


def test_celebamask_hq_splits_masks_and_schema(celebamask_hq):
    train = load_native("celebamask-hq", str(celebamask_hq), "train")
    assert_schema(train, "parsing_celebam", ["hq_id", "orig_file"])
    assert train["hq_id"] == [0, 1] and train["orig_file"] == ["000001.jpg", "000002.jpg"]
    expected = np.zeros((8, 8), np.uint8)
    expected[5:8, 2:6] = 1  # neck
    expected[1:6, 1:7] = 2  # skin paints over the neck
    expected[3:4, 3:5] = 10  # nose
    expected[0:2, 0:8] = 14  # hair, later than skin, wins where they overlap
    expected[2:4, 7:8] = 4  # l_ear = the subject's left = image right_ear (an RGB part file)
    first = train[0]
    assert first["face_box"] is None and first["face_keypoints"] is None
    assert first["mask"].mode == "L" and first["mask"].size == first["image"].size == (16, 16)
    assert np.array_equal(np.asarray(first["mask"]), expected.repeat(2, 0).repeat(2, 1))
    second = train[1]
    assert second["image"].mode == "L" and second["image"].size == (16, 16)  # the grayscale JPEG decodes
    assert np.array_equal(np.asarray(second["mask"]), np.full((16, 16), 2, np.uint8))
    validation = load_native("celebamask-hq", str(celebamask_hq), "validation")
    assert validation["hq_id"] == [2]
    assert load_native("celebamask-hq", str(celebamask_hq), "trainval")["hq_id"] == [0, 1, 2]
    test = assert_bad("celebamask-hq", celebamask_hq, "test", 1, r"29999\.jpg: image of id 29999")
    assert test["hq_id"] == [2001]
    assert np.array_equal(np.asarray(test[0]["mask"])[:8, :8], np.full((8, 8), 2, np.uint8))
    with pytest.raises(ValueError, match="splits: train, validation, test, trainval"):
        load_native("celebamask-hq", str(celebamask_hq), "val")


def test_celebamask_hq_bad_lines_and_missing_annotations(celebamask_hq):
    root = celebamask_hq / "CelebAMask-HQ"
    with open(root / "CelebA-HQ-to-CelebA-mapping.txt", "a", encoding="utf-8") as handle:
        handle.write("7 000006.jpg\n3 2 000003.jpg\n")  # a malformed line (7), an id with no part masks (3)
    write_jpeg(root / "CelebA-HQ-img" / "3.jpg")
    mapping = re.escape(str(root / "CelebA-HQ-to-CelebA-mapping.txt"))
    assert_bad("celebamask-hq", celebamask_hq, "train", 2, rf"{mapping}:7: expected 'idx orig_idx orig_file'",
               rf"{mapping}:8: no part mask 00003_<part>\.png")
    os.remove(celebamask_hq / "Eval" / "list_eval_partition.txt")
    with pytest.raises(DatasetFormatError, match="list_eval_partition.txt"):
        load_native("celebamask-hq", str(celebamask_hq), "train")


# ---------------------------------------------------------------------------------------------------------------
# LaPa
# ---------------------------------------------------------------------------------------------------------------
def landmark_text(count=106, declared=None):
    """x = i, y = 2 i + 0.5 for point i."""
    return f"{declared or count}\n" + "".join(f"{i} {2 * i + 0.5}\n" for i in range(count))


def lapa_label(value):
    pixels = np.zeros((12, 10), np.uint8)
    pixels[2:10, 2:8] = 1
    pixels[4, 3] = value
    return pixels


@pytest.fixture
def lapa(tmp_path):
    return write_lapa(tmp_path)


def write_lapa(tmp_path):
    samples = {"train": ["a_1", "b_2"], "val": ["c_3"], "test": ["d_4", "e_5"]}
    for folder, names in samples.items():
        for index, name in enumerate(names):
            write_png(tmp_path / folder / "labels" / f"{name}.png", lapa_label(index + 2))
            write_text(tmp_path / folder / "landmarks" / f"{name}.txt", landmark_text())
            if name != "e_5":  # e_5 has its label and landmarks but no photo
                write_jpeg(tmp_path / folder / "images" / f"{name}.jpg", size=(10, 12),
                           mode="L" if name == "d_4" else "RGB")
    return tmp_path


def test_lapa_keypoints_masks_and_splits(lapa):
    train = load_native("lapa", str(lapa), "train")
    assert_schema(train, "parsing_lapa", ["landmarks_106"])
    assert len(train) == 2
    row = train[0]
    assert np.allclose(row["face_keypoints"], [[104, 208.5], [105, 210.5], [54, 108.5], [84, 168.5], [90, 180.5]])
    assert np.allclose(row["landmarks_106"], [[i, 2 * i + 0.5] for i in range(106)])
    assert row["face_box"] is None
    assert np.array_equal(np.asarray(row["mask"]), lapa_label(2))
    assert np.array_equal(np.asarray(train[1]["mask"]), lapa_label(3))
    assert len(load_native("lapa", str(lapa), "validation")) == 1
    assert len(load_native("lapa", str(lapa), "trainval")) == 3
    test = assert_bad("lapa", lapa, "test", 1, r"e_5\.jpg: missing")
    assert test[0]["image"].mode == "L"  # the grayscale JPEG decodes


def test_lapa_bad_landmark_files_and_labels(lapa):
    landmarks = lapa / "train" / "landmarks"
    write_text(landmarks / "a_1.txt", landmark_text(count=105, declared=106))
    write_text(landmarks / "b_2.txt", landmark_text().replace("7 14.5\n", "7 fourteen\n"))
    write_png(lapa / "train" / "labels" / "g_7.png", lapa_label(5))
    write_text(landmarks / "g_7.txt", landmark_text())
    write_jpeg(lapa / "train" / "images" / "g_7.jpg", size=(10, 12))
    assert_bad("lapa", lapa, "train", 1, r"a_1\.txt: has 105 points", r"b_2\.txt:9: expected 'x y'")
    write_text(landmarks / "a_1.txt", landmark_text(count=98))
    write_png(lapa / "val" / "labels" / "c_3.png", lapa_label(2), mode="RGB")
    with pytest.raises(DatasetFormatError, match=r"a_1\.txt:1: declares 98 points"):
        load_native("lapa", str(lapa), "train")
    with pytest.raises(DatasetFormatError, match=r"c_3\.png: label is mode 'RGB'"):
        load_native("lapa", str(lapa), "validation")


# ---------------------------------------------------------------------------------------------------------------
# MORPH II
# ---------------------------------------------------------------------------------------------------------------
MORPH_FILES = ["Album2/273546_01M22.jpg", "Album2/306329_00F32.jpg", "Album2/124805_06F54.jpg",
               "Album2/with space/066525_3M45.jpg", "Album2/098195_6F46.jpg"]


@pytest.fixture
def morph2(tmp_path):
    return write_morph2(tmp_path)


def write_morph2(tmp_path):
    for index, relative in enumerate(MORPH_FILES):
        write_jpeg(tmp_path / "data" / relative, size=(20, 24), mode="L" if index == 1 else "RGB")
    lists = tmp_path / "label" / "RANDOM_80_20"
    write_text(lists / "train.txt", "Album2/273546_01M22.jpg 22\nAlbum2/306329_00F32.jpg 32\n\n"
               "Album2/with space/066525_3M45.jpg 45\n")
    write_text(lists / "test.txt", "Album2/124805_06F54.jpg\t54\nAlbum2/000001_0M20.jpg 20\n"
               "Album2/098195_6F46.jpg 4x6\n")
    return tmp_path


def test_morph2_lists(morph2):
    train = load_native("morph2", str(morph2), "train")
    assert_schema(train, "age_morph2", ["subject_id"])
    assert train["age"] == [22.0, 32.0, 45.0] and train["subject_id"] == [273546, 306329, 66525]
    assert train[1]["image"].mode == "L"  # the grayscale JPEG decodes
    assert train[0]["face_box"] is None and train[0]["face_keypoints"] is None
    test_list = re.escape(str(morph2 / "label" / "RANDOM_80_20" / "test.txt"))
    test = assert_bad("morph2", morph2, "test", 1, rf"{test_list}:2: image .*000001_0M20\.jpg is missing",
                      rf"{test_list}:3: expected '<relative path> <integer age>'")
    assert test["age"] == [54.0]
    with pytest.raises(DatasetFormatError, match="split_seed=3 applies only without them"):
        load_native("morph2", str(morph2), "train", split_seed=3)
    with pytest.raises(ValueError, match="unknown option"):
        load_native("morph2", str(morph2), "train", detect=True)


def test_morph2_seeded_split_without_lists(tmp_path):
    names = [f"Album2/{100000 + index:06d}_{index % 3}{'MF'[index % 2]}{20 + index}.JPG" for index in range(10)]
    for relative in names + ["Album2/scan_notes.jpg"]:  # the last is not a MORPH name: it gives no age
        write_jpeg(tmp_path / "data" / relative)
    # The documented rule: order by SHA-256 of "<seed>/<relative path>", the first round(20 %) are test.
    order = sorted(names + ["Album2/scan_notes.jpg"], key=lambda name: hashlib.sha256(f"0/{name}".encode()).hexdigest())
    expected_test = sorted(order[:2])
    assert age_morph2.seeded_split_members(str(tmp_path / "data"), "test", 0) == expected_test
    report = BadSampleReport()
    splits = {split: load_native("morph2", str(tmp_path), split, skip_bad=True, report=report)
              for split in ("train", "test")}
    assert len(report) == 1 and "scan_notes.jpg: file name does not give the age" in report.problems[0]
    test_ids = [int(os.path.basename(name)[:6]) for name in expected_test if "scan_notes" not in name]
    assert splits["test"]["subject_id"] == test_ids
    assert sorted(list(splits["train"]["subject_id"]) + test_ids) == list(range(100000, 100010))
    assert all(age == subject - 100000 + 20 for split in splits.values()
               for age, subject in zip(split["age"], split["subject_id"]))
    other_seed, other_test = next((seed, members) for seed in range(1, 10) if (members := (
        age_morph2.seeded_split_members(str(tmp_path / "data"), "test", seed))) != expected_test)
    other = load_native("morph2", str(tmp_path), "test", skip_bad=True, split_seed=other_seed)
    assert other["subject_id"] == [int(os.path.basename(name)[:6]) for name in other_test if "scan_notes" not in name]


class FakeDetector:
    """Two faces per image, the second more confident; no face in a gray image (equal channels)."""

    def __init__(self, device="cpu"):
        self.device = device

    def __call__(self, images):
        import torch

        image = images[0]
        if torch.equal(image[0], image[1]):
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "keypoints": torch.zeros(0, 5, 2)}]
        return [{"boxes": torch.zeros(2, 4), "scores": torch.tensor([0.8, 0.95]),
                 "keypoints": torch.arange(20, dtype=torch.float32).reshape(2, 5, 2)}]


def test_morph2_detect_keypoints_takes_the_most_confident_face(morph2, monkeypatch):
    from faceptor_hf import face_detection

    monkeypatch.setattr(face_detection, "RetinaFaceDetector", FakeDetector)
    train = assert_bad("morph2", morph2, "train", 2, r"train\.txt:2: no face detected", detect_keypoints=True)
    assert np.allclose(train[0]["face_keypoints"], np.arange(10, 20).reshape(5, 2))
    assert train["subject_id"] == [273546, 66525]


# ---------------------------------------------------------------------------------------------------------------
# UTKFace
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def utkface(tmp_path):
    return write_utkface(tmp_path)


def write_utkface(tmp_path):
    chips = tmp_path / "UTKFace"
    for name in ["25_0_1_20170116174525125.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
                 "5_0_0_20170110215648859.jpg.chip.jpg", "80_1_0_20170110131953974.jpg.chip.jpg",
                 "face_001.jpg.chip.jpg"]:
        write_jpeg(chips / name, size=(20, 20))
    write_jpeg(chips / "60_1_0_20170110141023577.jpg.chip.jpg", size=(20, 20), mode="L")
    write_text(tmp_path / "utk_train.csv", ",file,age\n18896,25_0_1_20170116174525125.jpg.chip.jpg,4\n"
               "18897,39_1_20170116174525125.jpg.chip.jpg,18\n")
    write_text(tmp_path / "utk_test.csv", ",file,age\n19023,60_1_0_20170110141023577.jpg.chip.jpg,39\n"
               "19024,30_0_2_20170116181301976.jpg.chip.jpg,9\n19025,face_001.jpg.chip.jpg,7\n")
    return tmp_path


def test_utkface_true_age_from_file_names(utkface, caplog):
    with caplog.at_level(logging.WARNING, logger=age_utkface.__name__):
        train = load_native("utkface", str(utkface), "train")
    assert_schema(train, "age_utkface", ["gender", "race"])
    assert train["age"] == [25.0, 39.0] and train["gender"] == [0, 1] and train["race"] == [1, None]
    assert train[0]["face_box"] is None and train[0]["face_keypoints"] is None
    assert "2 image(s)" in caplog.text and "left out" in caplog.text
    assert age_utkface.left_out_images(str(utkface)) == ["5_0_0_20170110215648859.jpg.chip.jpg",
                                                         "80_1_0_20170110131953974.jpg.chip.jpg"]
    test_list = re.escape(str(utkface / "utk_test.csv"))
    test = assert_bad("utkface", utkface, "test", 1, rf"{test_list}:3: image .*30_0_2_.* is missing",
                      rf"{test_list}:4: file name 'face_001.jpg.chip.jpg' does not start with")
    assert test["age"] == [60.0] and test[0]["image"].mode == "L"  # the grayscale JPEG decodes


def test_utkface_faceptor_label_folder_and_bad_lines(utkface):
    os.makedirs(utkface / "label")
    os.rename(utkface / "utk_test.csv", utkface / "label" / "test.csv")
    write_text(utkface / "label" / "train.csv", ",file,age\n18896,25_0_1_20170116174525125.jpg.chip.jpg,4\n"
               "18897,39_1_20170116174525125.jpg.chip.jpg\n18898,80_1_0_20170110131953974.jpg.chip.jpg,33\n"
               "18899,60_1_0_20170110141023577.jpg.chip.jpg,39\n")
    train_list = re.escape(str(utkface / "label" / "train.csv"))
    train = assert_bad("utkface", utkface, "train", 1, rf"{train_list}:3: expected '<index>,<file>,<age>'",
                       rf"{train_list}:4: listed age 33 fits neither", rf"{train_list}:5: .* is also in the test list")
    assert train["age"] == [25.0]
    os.remove(utkface / "label" / "test.csv")
    os.remove(utkface / "utk_train.csv")
    with pytest.raises(DatasetFormatError, match="no UTKFace split lists"):
        load_native("utkface", str(utkface), "train")
