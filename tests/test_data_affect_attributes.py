"""Converters of AffectNet, RAF-DB, FERPlus and CelebA on tiny fixtures written in each release's native format."""

import numpy as np
import PIL.Image
import pytest

from faceptor_hf.configuration_faceptor import CELEBA_ATTRIBUTES
from faceptor_hf.data import load_native
from faceptor_hf.data.converters.affect_ferplus import majority_label

from native_fixtures import assert_schema, expect_error, expect_skipped, write_lines


def write_jpeg(path, mode="RGB", size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new(mode, size, 128).save(path, "JPEG")


# --------------------------------------------------------------------------------------------------- AffectNet

POINTS_68 = ";".join(f"{i}.0;{2 * i}.0" for i in range(68))  # point i = (i, 2i)
# eye centers = means of 36-41 and 42-47, then nose 30, mouth corners 48 and 54
KEYPOINTS_OF_POINTS_68 = [[38.5, 77.0], [44.5, 89.0], [30.0, 60.0], [48.0, 96.0], [54.0, 108.0]]
AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
                    "valence,arousal")


def affectnet_native(root, extra_training=()):
    write_jpeg(root / "Manually_Annotated_Images" / "1" / "a.jpg")
    write_jpeg(root / "Manually_Annotated_Images" / "1" / "gray.jpg", mode="L")
    write_jpeg(root / "Manually_Annotated_Images" / "2" / "c.jpg")
    write_jpeg(root / "Manually_Annotated_Images" / "2" / "v.jpg")
    lists = root / "Manually_Annotated_file_lists"
    write_lines(lists / "training.csv", [
        AFFECTNET_HEADER,
        f"1/a.jpg,10,20,100,120,{POINTS_68},1,0.5,-0.25",
        f"1/gray.jpg,0,0,20,24,{POINTS_68},6,-0.75,0.125",
        f"2/c.jpg,0,0,20,24,{POINTS_68},7,0,0",  # contempt: left out by the protocol
        "2/c.jpg,0,0,20,24,,10,-2,-2",  # no-face, no landmarks: left out by the protocol
        *extra_training,
    ])
    write_lines(lists / "validation.csv", [f"2/v.jpg,1,2,3,4,{POINTS_68},0,0.0,0.0"])  # no header, as released
    return root


def test_affectnet_native_release(tmp_path):
    root = affectnet_native(tmp_path / "affectnet")
    train = load_native("affectnet", str(root), "train")
    assert_schema(train, "affectnet", "affect_affectnet")
    assert len(train) == 2
    assert train["expression"] == [1, 6]  # happy, anger: AffectNet codes are the task's order
    assert train.features["expression"].int2str(train["expression"]) == ["happy", "anger"]
    assert train["face_box"][0] == [10.0, 20.0, 110.0, 140.0]
    np.testing.assert_allclose(train["face_keypoints"][0], KEYPOINTS_OF_POINTS_68)
    np.testing.assert_allclose(train["landmarks68"][0][67], [67.0, 134.0])
    assert train["valence"] == [0.5, -0.75] and train["arousal"] == [-0.25, 0.125]
    assert train["image_name"] == ["1/a.jpg", "1/gray.jpg"]
    assert train[1]["image"].mode == "L" and train[1]["image"].size == (20, 24)  # the grayscale JPEG loads
    test = load_native("affectnet", str(root), "test")
    assert test["expression"] == [0] and test["image_name"] == ["2/v.jpg"]
    with pytest.raises(ValueError, match="splits: train, test"):
        load_native("affectnet", str(root), "validation")


def test_affectnet_bad_records(tmp_path):
    missing = affectnet_native(tmp_path / "missing", [f"9/gone.jpg,0,0,5,5,{POINTS_68},2,0,0"])
    expect_error("affectnet", missing, "train", "training.csv:6", "9/gone.jpg", "does not exist")
    expect_skipped("affectnet", missing, "train", 2, "gone.jpg")
    malformed = affectnet_native(tmp_path / "malformed", ["1/a.jpg,0,0,5,5"])
    expect_error("affectnet", malformed, "train", "training.csv:6", "expected 9 comma-separated fields")
    out_of_range = affectnet_native(tmp_path / "code", [f"1/a.jpg,0,0,5,5,{POINTS_68},11,0,0"])
    expect_error("affectnet", out_of_range, "train", "training.csv:6", "code 11 is outside")
    short_markup = affectnet_native(tmp_path / "points", ["1/a.jpg,0,0,5,5,1;2;3,3,0,0"])
    expect_error("affectnet", short_markup, "train", "training.csv:6", "3 values, expected 136")


def test_affectnet_faceptor_layout(tmp_path):
    root = tmp_path / "affectnet"
    write_jpeg(root / "data" / "img 1.jpg")
    write_jpeg(root / "data" / "b.jpg", mode="L")
    write_lines(root / "label" / "train.txt", ["img 1.jpg 3", "b.jpg 8", "b.jpg 5"])
    write_lines(root / "label" / "test.txt", ["b.jpg 4", "b.jpg"])
    train = load_native("affectnet", str(root), "train")
    assert train["expression"] == [3, 5] and train["image_name"] == ["img 1.jpg", "b.jpg"]
    assert train["face_box"] == [None, None] and train["face_keypoints"] == [None, None]
    assert train["valence"] == [None, None]
    expect_error("affectnet", root, "test", "test.txt:2", "expected '<name> <expression code>'")
    expect_error("affectnet", tmp_path, "train", "label/train.txt", "training.csv")


# --------------------------------------------------------------------------------------------------- RAF-DB

def rafdb_native(root, extra_lines=()):
    names = ["train_00001", "train_00002", *(f"test_000{code}" for code in range(1, 8))]
    for name in names:
        write_jpeg(root / "basic" / "Image" / "aligned" / f"{name}_aligned.jpg", size=(100, 100),
                   mode="L" if name == "train_00002" else "RGB")
    write_lines(root / "basic" / "EmoLabel" / "list_patition_label.txt",
                ["train_00001.jpg 5", "train_00002.jpg 7", *(f"test_000{code}.jpg {code}" for code in range(1, 8)),
                 *extra_lines])
    return root


def test_rafdb_native_release(tmp_path):
    root = rafdb_native(tmp_path / "RAF-DB")
    train = load_native("rafdb", str(root), "train")
    assert_schema(train, "rafdb", "affect_rafdb")
    assert train["image_name"] == ["train_00001.jpg", "train_00002.jpg"]
    assert train["expression"] == [2, 0] and train["native_code"] == [5, 7]  # sad, neutral
    assert train[1]["image"].mode == "L"
    test = load_native("rafdb", str(root / "basic"), "test")  # data_dir may also be basic/ itself
    # docs/datasets-and-evaluation.md §4.10: native 1..7 -> 3, 4, 5, 1, 2, 6, 0
    assert test["expression"] == [3, 4, 5, 1, 2, 6, 0]
    assert test.features["expression"].int2str(test["expression"]) == [
        "surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    assert test["face_box"] == [None] * 7 and test["face_keypoints"] == [None] * 7
    with pytest.raises(ValueError, match="splits: train, test"):
        load_native("rafdb", str(root), "valid")


def test_rafdb_bad_lines(tmp_path):
    missing = rafdb_native(tmp_path / "missing", ["train_00009.jpg 1"])
    expect_error("rafdb", missing, "train", "list_patition_label.txt:10", "train_00009_aligned.jpg", "does not exist")
    expect_skipped("rafdb", missing, "train", 2, "train_00009_aligned.jpg")
    malformed = rafdb_native(tmp_path / "malformed", ["train_00001.jpg"])
    expect_error("rafdb", malformed, "train", "list_patition_label.txt:10", "expected '<name> <code>'")
    out_of_range = rafdb_native(tmp_path / "code", ["test_0001.jpg 8"])
    expect_error("rafdb", out_of_range, "test", "list_patition_label.txt:10", "'8' is not one of RAF-DB's codes")
    prefix = rafdb_native(tmp_path / "prefix", ["val_0001.jpg 3"])
    expect_error("rafdb", prefix, "train", "list_patition_label.txt:10", "neither 'train_' nor 'test_'")


def test_rafdb_faceptor_layout(tmp_path):
    root = tmp_path / "RAF-DB" / "basic"
    write_jpeg(root / "data" / "train_00001.jpg")
    write_jpeg(root / "data" / "test_0001.jpg")
    write_lines(root / "label.txt", ["train_00001.jpg 4", "test_0001.jpg 6"])
    train = load_native("rafdb", str(tmp_path / "RAF-DB"), "train")
    assert train["expression"] == [1] and train["image_name"] == ["train_00001.jpg"]
    assert load_native("rafdb", str(root), "test")["expression"] == [6]
    expect_error("rafdb", tmp_path, "train", "list_patition_label.txt or label.txt")


# --------------------------------------------------------------------------------------------------- FERPlus

FER_HEADER = "emotion,pixels,Usage"
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
GRADIENT = np.arange(48 * 48) % 256
FERPLUS_RECORDS = [  # (usage, image name, votes, pixels)
    ("Training", "fer0000000.png", "4,0,0,1,3,2,0,0,0,0", None),  # 4 of 9 after dropping the single vote: unknown
    ("Training", "fer0000001.png", "6,0,1,1,0,0,0,0,2,0", None),  # neutral 6 of 8
    ("Training", "fer0000002.png", "0,0,0,7,0,1,0,0,2,0", None),  # sadness
    ("PublicTest", "fer0000003.png", "0,0,8,0,0,0,0,0,2,0", GRADIENT),  # surprise
    ("Training", "", "0,0,0,0,0,0,0,0,0,10", None),  # removed by FERPlus (blank name)
    ("PrivateTest", "fer0000005.png", "0,0,0,0,0,0,9,0,1,0", None),  # fear
    ("PrivateTest", "fer0000006.png", "0,0,0,0,0,0,0,8,2,0", None),  # contempt: left out
    ("PrivateTest", "fer0000007.png", "0,0,0,0,2,8,0,0,0,0", None),  # disgust
    ("Training", "fer0000008.png", "0,0,0,0,7,3,0,0,0,0", None),  # anger
    ("Training", "fer0000009.png", "1,9,0,0,0,0,0,0,0,0", None),  # happiness
]


def ferplus_release(root, bad_pixels_at=None):
    fer_lines, plus_lines = [FER_HEADER], [FERPLUS_HEADER]
    for index, (usage, name, votes, pixels) in enumerate(FERPLUS_RECORDS):
        values = np.full(48 * 48, 7 * index) if pixels is None else pixels
        if index == bad_pixels_at:
            values = values[:-1]
        fer_lines.append(f'0,{" ".join(map(str, values))},{usage}')
        plus_lines.append(f"{usage},{name},{votes}")
    write_lines(root / "fer2013" / "fer2013.csv", fer_lines)  # Kaggle's archive unpacks into fer2013/
    write_lines(root / "fer2013new.csv", plus_lines)
    return root


def test_ferplus_majority_rule():
    assert majority_label([4, 0, 0, 1, 3, 2, 0, 0, 0, 0]) is None  # 4 is not more than half of 9
    assert majority_label([5, 0, 0, 1, 3, 1, 0, 0, 0, 0]) == 0  # single votes are dropped: 5 of 8
    assert majority_label([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]) is None  # nothing survives the outlier removal
    assert majority_label([0, 0, 0, 0, 0, 0, 0, 0, 4, 6]) == 9  # NF (left out by the converter)


def test_ferplus_from_csv(tmp_path):
    root = ferplus_release(tmp_path / "ferplus")
    train = load_native("ferplus", str(root), "train")
    assert_schema(train, "ferplus", "affect_ferplus")
    assert train["image_name"] == ["fer0000001.png", "fer0000002.png", "fer0000003.png", "fer0000008.png",
                                   "fer0000009.png"]
    assert train["ferplus_label"] == [0, 3, 2, 4, 1]
    assert train["expression"] == [0, 2, 3, 6, 1]  # neutral, sad, surprise, anger, happy
    assert train["usage"] == ["Training", "Training", "PublicTest", "Training", "Training"]
    assert train["votes"][0] == [6, 0, 1, 1, 0, 0, 0, 0, 2, 0]
    image = train[2]["image"]
    assert image.mode == "L" and image.size == (48, 48)
    np.testing.assert_array_equal(np.asarray(image), GRADIENT.reshape(48, 48))
    validation = load_native("ferplus", str(root), "validation")
    assert validation["image_name"] == ["fer0000003.png"]
    test = load_native("ferplus", str(root), "test")
    assert test["expression"] == [4, 5] and test["ferplus_label"] == [6, 5]  # fear, disgust; contempt left out
    with pytest.raises(ValueError, match="splits: train, validation, test"):
        load_native("ferplus", str(root), "PrivateTest")


def test_ferplus_bad_records(tmp_path):
    root = ferplus_release(tmp_path / "ferplus", bad_pixels_at=2)
    expect_error("ferplus", root, "train", "fer2013.csv:4", "2303 values, expected 2304", "fer0000002.png")
    expect_skipped("ferplus", root, "train", 4, "fer2013.csv:4")
    assert len(load_native("ferplus", str(root), "test")) == 2  # the bad record is in another split
    header = tmp_path / "header"
    ferplus_release(header)
    (header / "fer2013new.csv").write_text("Usage,Image name,neutral\nTraining,a.png,10\n")
    expect_error("ferplus", header, "train", "fer2013new.csv:1", "header is")
    expect_error("ferplus", tmp_path, "train", "fer2013.csv is missing")


# --------------------------------------------------------------------------------------------------- CelebA

CELEBA_IMAGES = [  # (name, partition, landmarks)
    ("000001.jpg", 0, "69 109 106 113 77 142 73 152 108 154"),
    ("000002.jpg", 0, "69 110 107 112 81 135 70 151 108 153"),
    ("000003.jpg", 1, "76 112 104 106 108 128 74 156 98 158"),
    ("000004.jpg", 2, "72 113 108 108 101 138 71 155 101 151"),
    ("000005.jpg", 2, "66 114 112 112 86 119 71 147 104 150"),
]


def celeba_values(index):
    """Attribute row of image ``index``: attribute j is present when (index + j) is divisible by 3."""
    return [1 if (index + j) % 3 == 0 else 0 for j in range(40)]


def celeba_release(root, attribute_names=CELEBA_ATTRIBUTES, extra=(), folders=False, landmarks=True):
    anno, evaluation, images = (root / "Anno", root / "Eval", root / "Img") if folders else (root, root, root)
    rows = [f"{name} " + " ".join(f"{2 * value - 1:2d}" for value in celeba_values(index))
            for index, (name, _, _) in enumerate(CELEBA_IMAGES)]
    write_lines(anno / "list_attr_celeba.txt",
                [str(len(CELEBA_IMAGES) + len(extra)), " ".join(attribute_names) + " ", *rows,
                 *(line for line, _ in extra)])
    write_lines(evaluation / "list_eval_partition.txt",
                [f"{name} {partition}" for name, partition, _ in CELEBA_IMAGES] + [line for _, line in extra])
    if landmarks:
        write_lines(anno / "list_landmarks_align_celeba.txt", [
            str(len(CELEBA_IMAGES) + len(extra)),
            "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
            *(f"{name}    {points}" for name, _, points in CELEBA_IMAGES),
            *(f"{line.split()[0]} 1 2 3 4 5 6 7 8 9 10" for _, line in extra)])
    for index, (name, _, _) in enumerate(CELEBA_IMAGES):
        write_jpeg(images / "img_align_celeba" / name, size=(178, 218), mode="L" if index == 1 else "RGB")
    return root


def test_celeba_native_release(tmp_path):
    root = celeba_release(tmp_path / "celeba", folders=True)
    train = load_native("celeba", str(root), "train")
    assert_schema(train, "celeba", "biattr_celeba")
    assert train["image_name"] == ["000001.jpg", "000002.jpg"] and train["partition"] == [0, 0]
    assert train["attributes"] == [celeba_values(0), celeba_values(1)]
    assert train["attributes"][0][:4] == [1, 0, 0, 1]  # +1 -> 1, -1 -> 0
    np.testing.assert_allclose(train["face_keypoints"][0], [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]])
    assert train["face_box"] == [None, None]
    assert train[1]["image"].mode == "L"
    splits = {split: load_native("celeba", str(root), split)["image_name"]
              for split in ("validation", "test", "trainval")}
    assert splits == {"validation": ["000003.jpg"], "test": ["000004.jpg", "000005.jpg"],
                      "trainval": ["000001.jpg", "000002.jpg", "000003.jpg"]}
    with pytest.raises(ValueError, match="splits: train, validation, test, trainval"):
        load_native("celeba", str(root), "val")


def test_celeba_without_landmarks(tmp_path):
    root = celeba_release(tmp_path / "celeba", landmarks=False)
    test = load_native("celeba", str(root), "test", align_with_landmarks=False)
    assert test["face_keypoints"] == [None, None] and test["attributes"][1] == celeba_values(4)
    expect_error("celeba", root, "test", "list_landmarks_align_celeba.txt is missing")


def test_celeba_bad_lines(tmp_path):
    swapped = list(CELEBA_ATTRIBUTES)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    header = celeba_release(tmp_path / "header", attribute_names=swapped)
    expect_error("celeba", header, "train", "list_attr_celeba.txt:2", "column 3 has 'Bags_Under_Eyes'",
                 "expected 'Attractive'")
    missing = celeba_release(tmp_path / "missing", extra=[("000006.jpg " + " ".join(["1"] * 40), "000006.jpg 0")])
    expect_error("celeba", missing, "train", "list_attr_celeba.txt:8", "000006.jpg", "does not exist")
    expect_skipped("celeba", missing, "train", 2, "000006.jpg")
    assert len(load_native("celeba", str(missing), "test")) == 2  # the missing image is not in the test split
    malformed = celeba_release(tmp_path / "malformed", extra=[("000006.jpg " + " ".join(["1"] * 39), "000006.jpg 2")])
    expect_error("celeba", malformed, "test", "list_attr_celeba.txt:8", "39 attribute values, expected 40")
    value = celeba_release(tmp_path / "value", extra=[("000006.jpg " + " ".join(["1"] * 39 + ["0"]), "000006.jpg 2")])
    expect_error("celeba", value, "test", "list_attr_celeba.txt:8", "value '0' of Young is not 1 or -1")
    partition = celeba_release(tmp_path / "partition", extra=[("000006.jpg " + " ".join(["1"] * 40), "000006.jpg 3")])
    expect_error("celeba", partition, "test", "list_eval_partition.txt:6", "'<image> <0|1|2>'")
    order = celeba_release(tmp_path / "order", extra=[("000006.jpg " + " ".join(["1"] * 40), "000007.jpg 0")])
    expect_error("celeba", order, "train", "list_eval_partition.txt:6", "'000007.jpg' where")
