"""EXIF orientation of dataset images: reading every release in the frame its annotations (and its official loader)
use.

Readers show an image as it is displayed: ``datasets``' ``Image`` decoding and ``image_loading.load_image`` apply
the EXIF orientation tag. That is the official dense pipeline's frame too (OpenCV ``imread`` applies the tag), so
300W, WFLW, AFLW, LaPa and CelebAMask-HQ rows need nothing. The official 112-px loaders open with
``PIL.Image.open(...).convert("RGB")``, which ignores the tag, and a release may annotate the raw pixels (AffectNet's
CSV landmarks and face rectangles). A converter registered with ``exif_orientation=False`` therefore has each
image whose tag would turn or mirror it stored in its raw pixel frame (``raw_pixel_frame``): the same JPEG bytes
with the tag set to 1 (compressed data untouched, so every decoder gives the same pixels), or, where that cannot
be done, a PNG of the raw pixels. Every reader then sees what the official loader saw.
"""

from __future__ import annotations

import io

import PIL.Image

ORIENTATION_TAG = 0x0112
_JPEG_START = b"\xff\xd8"
_EXIF_HEADER = b"Exif\x00\x00"
# Markers after which no metadata segment can follow: start of scan, end of image.
_LAST_MARKERS = (0xDA, 0xD9)


def exif_orientation(image: PIL.Image.Image) -> int:
    """The orientation a reader applies (1 = as stored; 2-8 = mirrored and/or turned), EXIF or XMP as PIL reads it."""
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _jpeg_orientation_cleared(data: bytes) -> bytes | None:
    """``data`` (a JPEG) with the orientation entry of its EXIF IFD0 set to 1, every other byte unchanged; None
    when the file has no such entry where the EXIF standard puts it."""
    if not data.startswith(_JPEG_START):
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _LAST_MARKERS:
            return None
        length = int.from_bytes(data[position + 2:position + 4], "big")
        start = position + 4
        if marker == 0xE1 and data[start:start + 6] == _EXIF_HEADER:
            tiff = start + 6
            order = data[tiff:tiff + 2]
            if order not in (b"II", b"MM"):
                return None
            endian = "little" if order == b"II" else "big"
            ifd = tiff + int.from_bytes(data[tiff + 4:tiff + 8], endian)
            count = int.from_bytes(data[ifd:ifd + 2], endian)
            for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(data) - 11), 12):
                if int.from_bytes(data[entry:entry + 2], endian) == ORIENTATION_TAG:
                    patched = bytearray(data)
                    # A SHORT with count 1 sits left-aligned in the entry's 4-byte value field.
                    patched[entry + 8:entry + 10] = (1).to_bytes(2, endian)
                    return bytes(patched)
        position = start + length - 2
    return None


def _png_of_raw_pixels(image: PIL.Image.Image) -> bytes:
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def raw_pixel_frame(value):
    """A row's image value (a path or ``{"bytes", "path"}``) that every reader shows in its raw pixel frame.

    Returned unchanged when the image has no orientation to apply (nearly always); otherwise
    ``{"bytes": ..., "path": None}`` with the tag cleared (module doc; no path, since ``datasets`` would store an
    existing file's path instead of the bytes). Unreadable images are returned unchanged, for the image check to
    report."""
    path = value if isinstance(value, str) else value.get("path")
    data = None if isinstance(value, str) else value.get("bytes")
    try:
        with PIL.Image.open(io.BytesIO(data) if data is not None else path) as image:
            if exif_orientation(image) == 1:
                return value
            if data is None:
                with open(path, "rb") as handle:
                    data = handle.read()
            cleared = _jpeg_orientation_cleared(data) if image.format == "JPEG" else None
            if cleared is not None:
                with PIL.Image.open(io.BytesIO(cleared)) as check:
                    if exif_orientation(check) != 1:  # an XMP orientation is read too: fall back to pixels
                        cleared = None
            if cleared is None:
                image.load()
                cleared = _png_of_raw_pixels(image)
    except (OSError, SyntaxError, ValueError):
        return value
    return {"bytes": cleared, "path": None}


__all__ = ["ORIENTATION_TAG", "exif_orientation", "raw_pixel_frame"]
