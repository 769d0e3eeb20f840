"""EXIF orientation of dataset images: each converter's rows are read in the frame its annotations use, whatever
the reader (``datasets`` decoding, ``load_image`` on bytes), while photos given to the pipeline stay rotated."""

import io

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
from datasets import Image

from faceptor_hf.data import NATIVE_DATASETS, load_native
from faceptor_hf.data.exif import exif_orientation, raw_pixel_frame
from faceptor_hf.image_loading import load_image
from faceptor_hf.training.examples import read_image

from native_fixtures import write_lines

ROTATE_ON_DISPLAY = 6  # EXIF: turn 90 degrees clockwise to display
# Whether each release's annotations and official loader see its images with the EXIF orientation applied:
# OpenCV imread (the dense datasets, and the record/bin decoders) applies it, PIL.Image.open (the 112-px datasets)
# does not.
DISPLAYED_FRAME = {
    "300w": True, "wflw": True, "aflw": True, "cofw": True, "celebamask-hq": True, "lapa": True, "ms1mv3": True,
    "lfw": True, "cfp_fp": True, "agedb_30": True, "calfw": True, "cplfw": True,
    "affectnet": False, "rafdb": False, "ferplus": False, "morph2": False, "utkface": False, "celeba": False,
}
FACE = (slice(6, 14), slice(10, 18))  # rows, columns of the bright square ("the face") in the annotated frame


def annotated_frame() -> np.ndarray:
    """(40, 60, 3) uint8: gray, with a white 8 x 8 square at x 10-17, y 6-13."""
    pixels = np.full((40, 60, 3), 60, dtype=np.uint8)
    pixels[FACE] = 255
    return pixels


def face_points(count: int) -> list[list[float]]:
    """``count`` points spread over the square, pixel-index x y."""
    return [[10.0 + index % 8, 6.0 + (index // 8) % 8] for index in range(count)]


def save_with_orientation(pixels: np.ndarray, path, orientation: int = ROTATE_ON_DISPLAY):
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    PIL.Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif)


def brightness_at(image, points) -> np.ndarray:
    """Gray level (0-255) of the image as a reader sees it at each (rounded) point."""
    pixels = (read_image(image).mean(0) * 255).numpy()
    return np.array([pixels[round(y), round(x)] for x, y in points])


def test_every_converter_declares_the_frame_of_its_official_loader():
    assert {name: spec.exif_orientation for name, spec in NATIVE_DATASETS.items()} == DISPLAYED_FRAME


def test_affectnet_points_on_raw_pixels_land_on_the_face_of_an_exif_rotated_jpeg(tmp_path):
    # AffectNet's CSV annotates the stored (raw) pixels; the file says "rotate on display".
    root = tmp_path / "affectnet"
    original = root / "Manually_Annotated_Images" / "1" / "rotated.jpg"
    save_with_orientation(annotated_frame(), original)
    landmarks = face_points(68)
    write_lines(root / "Manually_Annotated_file_lists" / "training.csv", [
        ",".join(["1/rotated.jpg", "10", "6", "8", "8", ";".join(f"{x};{y}" for x, y in landmarks), "1", "0", "0"]),
    ])
    write_lines(root / "Manually_Annotated_file_lists" / "validation.csv", [])
    row = load_native("affectnet", str(root), "train")[0]
    assert row["image"].size == (60, 40)  # decoded by datasets, which applies EXIF orientation: none is left
    assert brightness_at(row["image"], row["face_keypoints"]).min() > 200
    assert brightness_at(row["image"], row["landmarks68"]).min() > 200
    stored = load_native("affectnet", str(root), "train").cast_column("image", Image(decode=False))[0]["image"]
    data = original.read_bytes()
    assert len(stored["bytes"]) == len(data)  # the same JPEG: only the orientation value differs
    assert sum(a != b for a, b in zip(stored["bytes"], data)) == 1
    assert brightness_at(stored["bytes"], row["face_keypoints"]).min() > 200
    # Without the converter's care a reader would turn the image and the points would miss the face.
    assert brightness_at(str(original), row["face_keypoints"]).max() < 100


def test_300w_points_in_the_displayed_frame_land_on_the_face_of_an_exif_rotated_jpeg(tmp_path):
    # OpenCV imread, the official 300W loader, applies the orientation: the CSV annotates the displayed image.
    root = tmp_path / "300W"
    stored = np.rot90(annotated_frame(), 1)  # what turning 90 degrees clockwise displays as annotated_frame()
    save_with_orientation(np.ascontiguousarray(stored), root / "data" / "afw" / "rotated.jpg")
    with PIL.Image.open(root / "data" / "afw" / "rotated.jpg") as image:
        assert PIL.ImageOps.exif_transpose(image).size == (60, 40)
    csv_points = [[x + 2.0, y + 2.0] for x, y in face_points(68)]  # the HRNet CSV frame is the official one + 2
    header = "image_name,scale,center_w,center_h," + ",".join(f"original_{i}_x,original_{i}_y" for i in range(68))
    write_lines(root / "face_landmarks_300w_train.csv",
                [header, ",".join(["afw/rotated.jpg", "0.05", "16", "12"] + [f"{v:g}" for p in csv_points for v in p])])
    row = load_native("300w", str(root), "train")[0]
    assert row["image"].size == (60, 40)
    assert brightness_at(row["image"], row["landmarks"]).min() > 200
    stored = load_native("300w", str(root), "train").cast_column("image", Image(decode=False))[0]["image"]
    assert brightness_at(stored["path"] if stored["bytes"] is None else stored["bytes"], row["landmarks"]).min() > 200


def test_photos_given_to_the_pipeline_keep_the_exif_rotation(tmp_path):
    path = tmp_path / "photo.jpg"
    save_with_orientation(annotated_frame(), path)
    assert tuple(load_image(str(path)).shape[-2:]) == (60, 40)  # displayed: 40 wide, 60 high


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_images_other_than_jpeg_are_stored_as_png_of_their_raw_pixels(tmp_path, image_format):
    path = tmp_path / f"rotated.{image_format.lower()}"
    exif = PIL.Image.Exif()
    exif[0x0112] = ROTATE_ON_DISPLAY
    PIL.Image.fromarray(annotated_frame()).save(path, image_format, exif=exif, lossless=True)
    value = raw_pixel_frame(str(path))
    with PIL.Image.open(io.BytesIO(value["bytes"])) as image:
        assert image.format == "PNG" and exif_orientation(image) == 1
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), annotated_frame())
    untagged = tmp_path / "plain.jpg"
    PIL.Image.fromarray(annotated_frame()).save(untagged)
    assert raw_pixel_frame(str(untagged)) == str(untagged)  # nothing to do: the row keeps its path
