"""Every kind of bad or unusual input gets a correct result or an error naming the input and the problem."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from faceptor_hf import FaceptorImageProcessor
from faceptor_hf.image_loading import ImageLoadError, ImageTooLargeError, UnrecognizedImageError, load_image
from faceptor_hf.image_processing_faceptor import FaceInputError

IMAGES = Path(__file__).parent.parent / "examples" / "images"
KEYPOINTS = np.array([[204.7, 101.0], [247.3, 103.4], [223.6, 129.4], [202.6, 138.2], [244.4, 140.4]])


def save(image: PIL.Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def write_broken_files(folder: Path) -> dict[str, Path]:
    """The bad-file corpus (also sent to the REST server by tests/test_serve.py): a truncated JPEG, an empty file,
    a text file named .png and JPEG magic followed by garbage."""
    data = (IMAGES / "grace_hopper.jpg").read_bytes()
    files = {"truncated": folder / "cut.jpg", "empty": folder / "zero.jpg", "not an image": folder / "notes.png",
             "garbage": folder / "garbage.jpg"}
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["empty"].write_bytes(b"")
    files["not an image"].write_text("hello")
    files["garbage"].write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    return files


def write_bomb(folder: Path) -> Path:
    """A 20000x20000 PNG of under 1 MB: 400 million pixels, refused before decoding."""
    return save(PIL.Image.new("1", (20_000, 20_000)), folder / "bomb.png", optimize=True)


@pytest.fixture(scope="module")
def astronaut():
    return PIL.Image.open(IMAGES / "astronaut.png").convert("RGB")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_image_modes_decode_to_rgb(astronaut, tmp_path, mode):
    """Every image becomes RGB: the FaRL encoder takes 3 channels and each branch has its fixed normalization, so
    transformers' common image-processor tests that switch ``do_convert_rgb`` off or feed 4-channel arrays with
    per-call ``image_mean`` / ``image_std`` cannot apply."""
    if mode == "I;16":
        array = (np.asarray(astronaut.convert("L"), dtype=np.uint16) * 257)
        image = PIL.Image.fromarray(array)
        assert image.mode.startswith("I;16")
        path = save(image, tmp_path / "deep.png")
    else:
        path = save(astronaut.convert(mode), tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    pixels = load_image(path)
    assert pixels.shape == (3, 512, 512) and pixels.dtype == torch.float32
    assert 0 <= pixels.min() and pixels.max() <= 1 and pixels.std() > 0.1
    gray = np.asarray(astronaut.convert("L"), dtype=np.float32) / 255
    if mode in ("L", "I;16"):
        np.testing.assert_allclose(pixels[0].numpy(), gray, atol=2 / 255)


def test_rgba_transparency_is_black(tmp_path):
    image = PIL.Image.new("RGBA", (20, 10), (255, 255, 255, 0))
    pixels = load_image(save(image, tmp_path / "clear.png"))
    assert pixels.max() == 0


def test_exif_orientation_is_applied(tmp_path, astronaut):
    wide = astronaut.resize((200, 100))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise on display
    path = save(wide, tmp_path / "rotated.jpg", exif=exif)
    assert load_image(path).shape == (3, 200, 100)


def test_corrupt_truncated_empty_and_foreign_files(tmp_path):
    write_broken_files(tmp_path)
    with pytest.raises(ImageLoadError, match=r"cut\.jpg: corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageLoadError, match=r"zero\.jpg: empty file"):
        load_image(tmp_path / "zero.jpg")
    with pytest.raises(UnrecognizedImageError, match=r"notes\.png: not a recognized image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageLoadError, match=r"garbage\.jpg"):
        load_image(tmp_path / "garbage.jpg")
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_decompression_bomb_is_refused_without_decoding(tmp_path):
    path = write_bomb(tmp_path)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: .*(too large|exceeds)"):
        load_image(path)
    big = PIL.Image.new("L", (9000, 8000))
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        load_image(save(big, tmp_path / "big.png"), max_pixels=50_000_000)


def test_arrays_of_every_layout_and_bad_arrays():
    assert load_image(np.zeros((4, 5), dtype=np.uint8)).shape == (3, 4, 5)
    assert load_image(np.zeros((3, 4, 5), dtype=np.float32)).shape == (3, 4, 5)
    assert load_image(torch.zeros(4, 5, 3, dtype=torch.uint8)).shape == (3, 4, 5)
    assert load_image(np.full((6, 7, 1), 65535, dtype=np.uint16)).max() == 1
    with pytest.raises(ImageLoadError, match=r"image 0: float pixels must lie in \[0, 1\]"):
        load_image(np.full((4, 4, 3), 2.0, dtype=np.float32))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, dtype=np.float32))
    with pytest.raises(ImageLoadError, match="channels"):
        load_image(np.zeros((5, 5, 7), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="unsupported input type"):
        load_image({"not": "an image"})


def test_one_by_one_image():
    processor = FaceptorImageProcessor()
    out = processor(np.zeros((1, 1, 3), dtype=np.uint8))
    assert out["pixel_values"].shape == (1, 3, 112, 112) and torch.isfinite(out["pixel_values"]).all()
    out = processor(np.zeros((1, 1, 3), dtype=np.uint8), face_boxes=np.zeros((0, 4)))
    assert out["pixel_values"].shape[0] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(face_keypoints=np.zeros((2, 4, 2))), r"face_keypoints must have shape \(faces, 5, 2\)"),
        (dict(face_keypoints=np.full((1, 5, 2), np.nan)), "NaN"),
        (dict(face_boxes=np.array([[10.0, 10.0, 5.0, 50.0]])), "no area"),
        (dict(face_boxes=np.array([[600.0, 10.0, 700.0, 90.0]])), "outside"),
        (dict(face_boxes=np.zeros((1, 3))), r"face_boxes must have shape \(faces, 4\)"),
        (dict(face_keypoints=KEYPOINTS, face_boxes=np.zeros((2, 4))), "keypoint sets but 2 boxes"),
    ],
)
def test_bad_face_geometry(astronaut, kwargs, message):
    with pytest.raises(FaceInputError, match=message):
        FaceptorImageProcessor()(astronaut, **kwargs)


def test_box_partly_outside_is_padded(astronaut):
    out = FaceptorImageProcessor()(astronaut, face_boxes=np.array([[-100.0, -50.0, 150.0, 200.0]]))
    crop = out["dense_pixel_values"][0]
    assert torch.isfinite(crop).all() and out.geometry.face_boxes[0, 0] == -100


def test_list_length_mismatch(astronaut):
    with pytest.raises(FaceInputError, match="2 entries for 1 images"):
        FaceptorImageProcessor()([astronaut], face_keypoints=[KEYPOINTS, KEYPOINTS])


def test_decoded_images_round_trip_through_the_loader():
    tiny = load_image(np.full((1, 1, 3), 255, dtype=np.uint8))
    assert tiny.shape == (3, 1, 1)
    assert torch.equal(load_image(tiny), tiny)


def test_urls_and_data_uris_load_like_files(tmp_path):
    """What transformers' image pipelines accept as strings: http(s) URLs (served here on the loopback) and base64
    data URIs; a failing download names the URL."""
    import base64
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(IMAGES))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        expected = load_image(IMAGES / "astronaut.png")
        assert torch.equal(load_image(f"{base}/astronaut.png"), expected)
        with pytest.raises(ImageLoadError, match=r"missing\.png: cannot be downloaded .*404"):
            load_image(f"{base}/missing.png")
        server.shutdown()
    uri = "data:image/png;base64," + base64.b64encode((IMAGES / "astronaut.png").read_bytes()).decode()
    assert torch.equal(load_image(uri), expected)
    with pytest.raises(ImageLoadError, match=r"image 3 \(data URI\): not a valid base64"):
        load_image("data:image/png;base64,@@@", 3)
