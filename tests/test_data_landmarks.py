"""Converters of 300W, WFLW, COFW and AFLW-19 on tiny fixtures written in each release's native format."""

import numpy as np
import PIL.Image
import pytest

from faceptor_hf.data import BadSampleReport, load_native

from native_fixtures import assert_schema, expect_error, expect_skipped, write_lines


def write_image(path, mode="RGB", size=(32, 24), image_format="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new(mode, size, 100).save(path, image_format)


def points(count, x0, y0, dx=1.0, dy=2.0):
    """(count, 2): point k = (x0 + k dx, y0 + k dy)."""
    return [[x0 + k * dx, y0 + k * dy] for k in range(count)]


def flat(values):
    return [value for point in values for value in point]


def number(value):
    return f"{value:g}"


# --------------------------------------------------------------------------------------------------------- 300W

HEADER_300W = "image_name,scale,center_w,center_h," + ",".join(f"original_{i}_x,original_{i}_y" for i in range(68))


def csv_line(image, scale, center, values):
    return ",".join([image, number(scale), number(center[0]), number(center[1])] + [number(v) for v in flat(values)])


# (image as the CSV names it, scale, center, first point) per sample; point k = first + (k, 2k)
SAMPLES_300W = {
    "train": [("afw/1051618982_1.jpg", 0.25, (32, 26), (3, 5)), ("helen/trainset/gray_1.jpg", 0.1, (12, 14), (7, 2))],
    "valid_common": [("helen/testset/30427236_1.jpg", 0.2, (20, 20), (4, 4)),
                     ("lfpw/testset/image_0001.png", 0.15, (16, 18), (2, 3))],
    "valid_challenge": [("ibug/image_092_01.jpg", 0.3, (40, 30), (10, 6)),
                        ("ibug/image_003_1.jpg", 0.2, (25, 22), (5, 5))],
}


@pytest.fixture
def root_300w(tmp_path):
    return write_root_300w(tmp_path)


def write_root_300w(tmp_path):
    """HRNet CSVs in the root, the iBUG images under data/ (ibug/image_092 _01.jpg with its native space, one
    grayscale JPEG, one PNG), a comment and a blank line in the train CSV."""
    root = tmp_path / "300W"
    for image, *_ in [sample for samples in SAMPLES_300W.values() for sample in samples]:
        native = image.replace("image_092_01", "image_092 _01")
        write_image(root / "data" / native, mode="L" if "gray" in image else "RGB",
                    image_format="PNG" if image.endswith(".png") else "JPEG")
    for part, samples in SAMPLES_300W.items():
        lines = [HEADER_300W] + [csv_line(image, scale, center, points(68, *first)) for image, scale, center, first
                                 in samples]
        if part == "train":
            lines[1:1] = ["# comment", ""]
        write_lines(root / f"face_landmarks_300w_{part}.csv", lines)
    write_lines(root / "face_landmarks_300w_valid.csv",
               [HEADER_300W] + [csv_line(image, scale, center, points(68, *first)) for image, scale, center, first
                                in SAMPLES_300W["valid_common"] + SAMPLES_300W["valid_challenge"]])
    return root


def test_300w_hrnet_csv_splits_values_and_awkward_files(root_300w):
    sizes = {"train": 2, "test_common": 2, "test_challenge": 2, "test_full": 4}
    for split, size in sizes.items():
        dataset = load_native("300w", str(root_300w), split)
        assert len(dataset) == size
    assert_schema(dataset, "300w", "align_300w")
    assert dataset["subset"] == ["common", "common", "challenge", "challenge"]

    train = load_native("300w", str(root_300w), "train")
    first = train[0]
    # CSV values - 2.0: point k = (3 + k - 2, 5 + 2k - 2); box: square of side 200 * 0.25 about (32 - 2, 26 - 2)
    np.testing.assert_array_equal(first["landmarks"], np.array(points(68, 1, 3), dtype=np.float32))
    assert first["face_box"] == [5.0, -1.0, 55.0, 49.0]
    assert first["face_keypoints"] is None and first["subset"] == "train"
    assert train[1]["image"].mode == "L"  # grayscale JPEG as released; readers convert

    challenge = load_native("300w", str(root_300w), "test_challenge")
    assert challenge[0]["image"].size == (32, 24)  # read from "ibug/image_092 _01.jpg"
    assert challenge[0]["face_box"] == [8.0, -2.0, 68.0, 58.0]
    np.testing.assert_array_equal(challenge[0]["landmarks"][67], [8 + 67, 4 + 134])


def test_300w_missing_image_malformed_line_and_missing_csv(root_300w):
    csv = root_300w / "face_landmarks_300w_train.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines + [csv_line("afw/not_there.jpg", 0.2, (10, 10), points(68, 0, 0))]) + "\n")
    expect_error("300w", root_300w, "train", "face_landmarks_300w_train.csv:6", "not_there.jpg")
    expect_skipped("300w", root_300w, "train", 2, "face_landmarks_300w_train.csv:6")

    csv.write_text("\n".join(lines[:3] + ["afw/1051618982_1.jpg,0.25,32,26,1,2,3"] + lines[3:]) + "\n")
    expect_error("300w", root_300w, "train", "face_landmarks_300w_train.csv:4", "found 7")
    expect_skipped("300w", root_300w, "train", 2, "face_landmarks_300w_train.csv:4")

    (root_300w / "face_landmarks_300w_valid.csv").unlink()
    expect_error("300w", root_300w, "test_full", "face_landmarks_300w_valid.csv", "annotations='native'")
    with pytest.raises(ValueError, match="test_common, test_challenge, test_full"):
        load_native("300w", str(root_300w), "test")


def write_pts(path, values, declared=None):
    write_lines(path, ["version: 1", f"n_points:  {declared or len(values)}", "{"]
               + [f"{x:.3f} {y:.3f}" for x, y in values] + ["}"])


@pytest.fixture
def native_300w(tmp_path):
    """The iBUG folders under data/ with 1-based .pts files next to the images, including the space in
    ``image_092 _01`` and a grayscale JPEG."""
    root = tmp_path / "ibug300w"
    samples = {"afw/111_1": (5, 9), "helen/trainset/gray_2": (1, 1), "lfpw/trainset/image_0003": (2, 4),
               "helen/testset/44_1": (3, 3), "lfpw/testset/image_0005": (4, 2), "ibug/image_092 _01": (6, 7)}
    for stem, first in samples.items():
        extension = ".png" if stem.startswith("lfpw") else ".jpg"
        write_image(root / "data" / (stem + extension), mode="L" if "gray" in stem else "RGB",
                    image_format="PNG" if extension == ".png" else "JPEG")
        write_pts(root / "data" / (stem + ".pts"), points(68, *first, dx=0.5, dy=0.25))
    return root


def test_300w_native_pts_are_one_based(native_300w):
    sizes = {"train": 3, "test_common": 2, "test_challenge": 1, "test_full": 3}
    for split, size in sizes.items():
        assert len(load_native("300w", str(native_300w), split, annotations="native")) == size
    challenge = load_native("300w", str(native_300w), "test_challenge", annotations="native")
    assert_schema(challenge, "300w", "align_300w")
    row = challenge[0]
    # .pts point k = (6 + k/2, 7 + k/4), 1-based -> minus 1; extent x 5..38.5, y 6..22.75 -> square of side 33.5
    # about (21.75, 14.375)
    np.testing.assert_array_equal(row["landmarks"], np.array(points(68, 5, 6, 0.5, 0.25), dtype=np.float32))
    assert row["face_box"] == [5.0, -2.375, 38.5, 31.125]
    assert row["subset"] == "challenge" and row["image"].size == (32, 24)
    assert load_native("300w", str(native_300w), "train", annotations="native")[1]["image"].mode == "L"


def test_300w_native_bad_pts_and_missing_image(native_300w):
    data = native_300w / "data"
    write_pts(data / "ibug" / "image_100_1.pts", points(67, 0, 0), declared=68)
    write_image(data / "ibug" / "image_100_1.jpg")
    expect_error("300w", native_300w, "test_challenge", "image_100_1.pts:71", "67 points, expected 68",
                 annotations="native")
    expect_skipped("300w", native_300w, "test_challenge", 1, "image_100_1.pts:71", annotations="native")

    (data / "ibug" / "image_100_1.pts").unlink()
    write_pts(data / "ibug" / "image_101_1.pts", points(68, 0, 0))  # no image next to it
    expect_error("300w", native_300w, "test_challenge", "image_101_1.pts", "no image", annotations="native")

    write_lines(data / "ibug" / "image_101_1.pts", ["version: 1", "n_points: 68", "{", "1.0 2.0 3.0"])
    expect_error("300w", native_300w, "test_challenge", "image_101_1.pts:4", "two numbers", annotations="native")
    with pytest.raises(ValueError, match="annotations must be one of"):
        load_native("300w", str(native_300w), "train", annotations="pts")


# --------------------------------------------------------------------------------------------------------- WFLW

HEADER_WFLW = "image_name,scale,center_w,center_h," + ",".join(f"original_{i}_x,original_{i}_y" for i in range(98))
WFLW_TEST = [("0--Parade/0_Parade_marchingband_1_20.jpg", 0.2, (20, 15), (1.5, 2.25)),
             ("0--Parade/0_Parade_marchingband_1_20.jpg", 0.1, (8, 9), (3, 1)),  # a second face of one image
             ("51--Dresses/51_Dresses_wearingdress_51_377.jpg", 0.3, (16, 12), (2, 2))]


@pytest.fixture
def root_wflw(tmp_path):
    return write_root_wflw(tmp_path)


def write_root_wflw(tmp_path):
    """HRNet CSVs (train, test, test_blur naming the second test face, an empty test_largepose, the other four
    subsets absent) with the images under data/, one of them grayscale."""
    root = tmp_path / "WFLW"
    write_image(root / "data" / "0--Parade" / "0_Parade_marchingband_1_20.jpg")
    write_image(root / "data" / "51--Dresses" / "51_Dresses_wearingdress_51_377.jpg", mode="L")
    write_image(root / "data" / "2--Demonstration" / "2_Demonstration_1.jpg")

    def csv(samples):
        return [HEADER_WFLW] + [csv_line(image, scale, center, points(98, *first)) for image, scale, center, first
                                in samples]

    write_lines(root / "face_landmarks_wflw_train.csv", csv([("2--Demonstration/2_Demonstration_1.jpg", 0.5, (10, 10),
                                                            (0, 0))]))
    write_lines(root / "face_landmarks_wflw_test.csv", csv(WFLW_TEST))
    write_lines(root / "face_landmarks_wflw_test_blur.csv", csv(WFLW_TEST[1:2]))
    write_lines(root / "face_landmarks_wflw_test_largepose.csv", csv([]))
    return root


def test_wflw_hrnet_csv_values_and_attribute_flags(root_wflw):
    test = load_native("wflw", str(root_wflw), "test")
    assert len(test) == 3
    assert_schema(test, "wflw", "align_wflw")
    # no offset: point k = (1.5 + k, 2.25 + 2k); box = square of side 200 * 0.2 about (20, 15)
    np.testing.assert_array_equal(test[0]["landmarks"], np.array(points(98, 1.5, 2.25), dtype=np.float32))
    assert test[0]["face_box"] == [0.0, -5.0, 40.0, 35.0]
    assert test["is_blur"] == [False, True, False]
    assert test["is_largepose"] == [False, False, False]
    assert test["is_makeup"] == [None, None, None]  # its CSV is absent
    assert test[2]["image"].mode == "L"

    blur = load_native("wflw", str(root_wflw), "test_blur")
    assert len(blur) == 1 and blur[0]["is_blur"] is True and blur[0]["face_box"] == [-2.0, -1.0, 18.0, 19.0]
    train = load_native("wflw", str(root_wflw), "train")
    assert len(train) == 1 and train[0]["is_occlusion"] is None
    expect_error("wflw", root_wflw, "test_makeup", "face_landmarks_wflw_test_makeup.csv", "not found")


def test_wflw_hrnet_csv_missing_image_and_malformed_line(root_wflw):
    csv = root_wflw / "face_landmarks_wflw_test.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines + [csv_line("9--Press/missing.jpg", 0.2, (5, 5), points(98, 0, 0)),
                                      "51--Dresses/51_Dresses_wearingdress_51_377.jpg,0.3,16,x"]) + "\n")
    expect_error("wflw", root_wflw, "test", "face_landmarks_wflw_test.csv:5", "missing.jpg")
    report = BadSampleReport()
    dataset = load_native("wflw", str(root_wflw), "test", skip_bad=True, report=report)
    assert len(dataset) == 3 and len(report) == 2
    assert "face_landmarks_wflw_test.csv:6" in report.problems[1] and "found 4" in report.problems[1]


def native_wflw_line(values, rect, attributes, image):
    return " ".join([f"{v:.6f}" for v in flat(values)] + [str(v) for v in rect] + [str(a) for a in attributes]
                    + [image])


@pytest.fixture
def native_wflw(tmp_path):
    """The release's layout: WFLW_images/ and WFLW_annotations/list_98pt_rect_attr_train_test/."""
    root = tmp_path / "WFLW_release"
    write_image(root / "WFLW_images" / "0--Parade" / "0_Parade_Parade_0_904.jpg")
    write_image(root / "WFLW_images" / "37--Soccer" / "37_Soccer_soccer_ball_37_45.jpg", mode="L")
    lists = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    write_lines(lists / "list_98pt_rect_attr_train.txt",
               [native_wflw_line(points(98, 10, 20, 0.5, 0.25), (9, 19, 60, 45), (0, 0, 0, 0, 0, 0),
                                 "0--Parade/0_Parade_Parade_0_904.jpg")])
    write_lines(lists / "list_98pt_rect_attr_test.txt",
               [native_wflw_line(points(98, 1, 2), (0, 1, 98, 196), (1, 0, 0, 1, 0, 0),
                                 "37--Soccer/37_Soccer_soccer_ball_37_45.jpg"),
                native_wflw_line(points(98, 3, 4), (2, 3, 100, 198), (0, 1, 0, 0, 0, 1),
                                 "0--Parade/0_Parade_Parade_0_904.jpg")])
    return root


def test_wflw_native_lists(native_wflw):
    train = load_native("wflw", str(native_wflw), "train", annotations="native")
    assert_schema(train, "wflw", "align_wflw")
    # point k = (10 + k/2, 20 + k/4): extent x 10..58.5, y 20..44.25 -> square of side 48.5 about (34.25, 32.125)
    np.testing.assert_array_equal(train[0]["landmarks"], np.array(points(98, 10, 20, 0.5, 0.25), dtype=np.float32))
    assert train[0]["face_box"] == [10.0, 7.875, 58.5, 56.375]
    assert train[0]["is_blur"] is False

    test = load_native("wflw", str(native_wflw), "test", annotations="native")
    assert len(test) == 2 and test["is_largepose"] == [True, False] and test["is_blur"] == [False, True]
    assert test[0]["image"].mode == "L"
    for subset, size in {"largepose": 1, "makeup": 1, "expression": 1, "blur": 1}.items():
        assert len(load_native("wflw", str(native_wflw), f"test_{subset}", annotations="native")) == size


def test_wflw_native_bad_lines(native_wflw):
    lists = native_wflw / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    good = (lists / "list_98pt_rect_attr_test.txt").read_text().splitlines()
    write_lines(lists / "list_98pt_rect_attr_test.txt",
               good + [native_wflw_line(points(98, 0, 0), (0, 0, 1, 1), (0, 0, 0, 0, 0, 0), "9--Press/gone.jpg"),
                       native_wflw_line(points(97, 0, 0), (0, 0, 1, 1), (0, 0, 0, 0, 0, 0), "x.jpg"),
                       native_wflw_line(points(98, 0, 0), (0, 0, 1, 1), (0, 2, 0, 0, 0, 0), "x.jpg")])
    expect_error("wflw", native_wflw, "test", "list_98pt_rect_attr_test.txt:3", "gone.jpg", annotations="native")
    report = BadSampleReport()
    load_native("wflw", str(native_wflw), "test", skip_bad=True, report=report, annotations="native")
    assert len(report) == 3
    assert "list_98pt_rect_attr_test.txt:4" in report.problems[1] and "found 205" in report.problems[1]
    assert "list_98pt_rect_attr_test.txt:5" in report.problems[2] and "0 or 1" in report.problems[2]


# --------------------------------------------------------------------------------------------------------- COFW

def cofw_phis(count):
    """(count, 87): face i has x_k = 2 + i + k/2, y_k = 3 + k/4, occlusion flag k % 3 == 0."""
    k = np.arange(29)
    return np.stack([np.concatenate([2 + i + k / 2, 3 + k / 4, (k % 3 == 0).astype(float)]) for i in range(count)])


def write_mat73(path, image_key, phis_key, images, phis):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 after a 512-byte user block holding the text header, a cell
    array as a dataset of object references into ``#refs#``, every array with its axes reversed (column-major)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        cell = handle.create_dataset(image_key, (1, len(images)), dtype=h5py.ref_dtype)
        for index, image in enumerate(images):
            stored = refs.create_dataset(f"i{index}", data=np.asarray(image).T)
            stored.attrs["MATLAB_class"] = np.bytes_(str(np.asarray(image).dtype))
            cell[0, index] = stored.ref
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        handle.create_dataset(phis_key, data=np.asarray(phis, dtype=np.float64).T).attrs["MATLAB_class"] = \
            np.bytes_("double")
    with open(path, "r+b") as handle:
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
        handle.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


@pytest.fixture
def root_cofw(tmp_path):
    return write_root_cofw(tmp_path)


def write_root_cofw(tmp_path):
    """Color train file (v7.3/HDF5): an RGB image with one red pixel, a grayscale image, a float image (bad);
    Caltech-style v5 grayscale test file (scipy)."""
    import scipy.io

    root = tmp_path / "COFW"
    root.mkdir()
    rgb = np.zeros((12, 10, 3), dtype=np.uint8)
    rgb[1, 5] = (255, 0, 0)
    gray = np.full((8, 9), 77, dtype=np.uint8)
    write_mat73(root / "COFW_train_color.mat", "IsTr", "phisTr", [rgb, gray, np.zeros((4, 4))], cofw_phis(3))
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0], cells[1, 0] = np.full((6, 7), 5, dtype=np.uint8), np.full((5, 5), 9, dtype=np.uint8)
    scipy.io.savemat(root / "COFW_test.mat", {"IsT": cells, "phisT": cofw_phis(2)})
    return root


def test_cofw_mat_v73_and_v5(root_cofw):
    train = expect_skipped("cofw", root_cofw, "train", 2, "COFW_train_color.mat:IsTr{3}", "float64")
    assert_schema(train, "cofw", "align_cofw")
    first, second = train[0], train[1]
    assert first["image"].mode == "RGB" and first["image"].size == (10, 12)
    assert first["image"].getpixel((5, 1)) == (255, 0, 0)  # not transposed
    assert second["image"].mode == "L" and second["image"].size == (9, 8)
    np.testing.assert_array_equal(first["landmarks"], np.array(points(29, 2, 3, 0.5, 0.25), dtype=np.float32))
    # x 2..16, y 3..10 -> center (9, 6.5), side max(14, 7)
    assert first["face_box"] == [2.0, -0.5, 16.0, 13.5]
    # face 2: x 3..17 -> floor/ceil unchanged; center (10, 6.5)
    assert second["face_box"] == [3.0, -0.5, 17.0, 13.5]
    assert first["occluded"] == [k % 3 == 0 for k in range(29)]
    expect_error("cofw", root_cofw, "train", "COFW_train_color.mat:IsTr{3}")

    test = load_native("cofw", str(root_cofw), "test")
    assert len(test) == 2 and test[0]["image"].size == (7, 6) and test[0]["image"].getpixel((0, 0)) == 5


def test_cofw_unusable_files(root_cofw):
    (root_cofw / "COFW_test.mat").unlink()
    expect_error("cofw", root_cofw, "test", "COFW_test_color.mat or COFW_test.mat")
    write_mat73(root_cofw / "COFW_test_color.mat", "IsT", "phisT", [np.zeros((4, 4), np.uint8)], cofw_phis(2))
    expect_error("cofw", root_cofw, "test", "COFW_test_color.mat", "phisT has shape (2, 87), expected (1, 87)")
    write_mat73(root_cofw / "COFW_test_color.mat", "Images", "phisT", [np.zeros((4, 4), np.uint8)], cofw_phis(1))
    expect_error("cofw", root_cofw, "test", "['IsT'] missing")


# --------------------------------------------------------------------------------------------------------- AFLW

AFLW_FACES = 20003


@pytest.fixture(scope="module")
def root_aflw(tmp_path_factory):
    return write_root_aflw(tmp_path_factory.mktemp("AFLW"))


def write_root_aflw(root):
    """AFLWinfo_release.mat (v5) for 20,003 faces with ``ra`` = the faces in reverse, so the test split is rows 2, 1,
    0: row 2 a grayscale image, row 1 with one hidden point, row 0 a missing image. Every train face shows one
    image. Face i: x_k = i + k, y_k = 100 + i + 2k, bbox (left, right, top, bottom) = (5 + i, 45 + i, 7, 67)."""
    import scipy.io

    flickr = root / "data" / "flickr"
    write_image(flickr / "0" / "image00002.jpg")
    write_image(flickr / "2" / "image10000.jpg", mode="L", size=(40, 30))
    write_image(flickr / "3" / "image20000.jpg")
    rows = np.arange(AFLW_FACES, dtype=np.float64)[:, None]
    k = np.arange(19, dtype=np.float64)[None, :]
    names = np.empty((AFLW_FACES, 1), dtype=object)
    names[:, 0] = "0/image00002.jpg"
    names[0, 0], names[1, 0], names[2, 0] = "3/image_missing.jpg", "3/image20000.jpg", "2/image10000.jpg"
    mask = np.ones((AFLW_FACES, 19))
    mask[1, 4] = 0
    scipy.io.savemat(root / "AFLWinfo_release.mat", {
        "bbox": np.concatenate([5 + rows, 45 + rows, 7 + 0 * rows, 67 + 0 * rows], axis=1),
        "data": np.concatenate([rows + k, 100 + rows + 2 * k], axis=1),
        "mask_new": mask, "nameList": names, "ra": np.arange(AFLW_FACES, 0, -1, dtype=np.float64)[None, :]})
    return root


def test_aflw_splits_boxes_and_bad_samples(root_aflw):
    expect_error("aflw", root_aflw, "test", "AFLWinfo_release.mat:face 1", "image_missing.jpg")
    test = expect_skipped("aflw", root_aflw, "test", 2, "image_missing.jpg")
    assert_schema(test, "aflw", "align_aflw")
    assert test["aflw_index"] == [2, 1]
    first = test[0]
    assert first["face_box"] == [7.0, 7.0, 47.0, 67.0]  # stored box, not squared
    np.testing.assert_array_equal(first["landmarks"], np.array(points(19, 2, 102), dtype=np.float32))
    assert first["image"].mode == "L" and all(first["visible"])
    assert test[1]["visible"] == [k != 4 for k in range(19)]

    frontal = expect_skipped("aflw", root_aflw, "test_frontal", 1, "image_missing.jpg")
    assert frontal["aflw_index"] == [2]

    train = load_native("aflw", str(root_aflw), "train", verify_images=False)
    assert len(train) == 20000
    assert train[0]["aflw_index"] == AFLW_FACES - 1 and train[19999]["aflw_index"] == 3


def test_aflw_unusable_release(tmp_path):
    import scipy.io

    (tmp_path / "data" / "flickr").mkdir(parents=True)
    expect_error("aflw", tmp_path, "test", "AFLWinfo_release.mat not found")
    names = np.empty((2, 1), dtype=object)
    names[:, 0] = "0/a.jpg"
    contents = {"bbox": np.ones((2, 4)), "data": np.ones((2, 38)), "mask_new": np.ones((2, 19)), "nameList": names,
                "ra": np.array([[1.0, 1.0]])}
    scipy.io.savemat(tmp_path / "AFLWinfo_release.mat", contents)
    expect_error("aflw", tmp_path, "test", "ra must be a 1-based permutation")
    scipy.io.savemat(tmp_path / "AFLWinfo_release.mat", dict(contents, data=np.ones((2, 36)), ra=np.array([[2, 1]])))
    expect_error("aflw", tmp_path, "train", "data has shape (2, 36), expected (2, 38)")
    with pytest.raises(ValueError, match="train, test, test_frontal"):
        load_native("aflw", str(tmp_path), "validation")
