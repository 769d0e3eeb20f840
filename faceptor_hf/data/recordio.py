"""Reading MXNet RecordIO files (insightface ``train.rec`` / ``train.idx``) without MXNet.

Format (docs/datasets-and-evaluation.md §4.13, and dmlc-core's RecordIO that MXNet writes):

- ``.idx`` is text, one ``key<TAB>byte_offset`` line per record (decimal integers); the offset is where the
  record's first part starts in the ``.rec`` file.
- A record in the ``.rec`` file is one or more *parts*, each: the magic number ``0xCED7230A`` (uint32,
  little-endian), a uint32 whose lower 29 bits are the part's length in bytes and whose upper 3 bits are the
  continuation flag, then the part's bytes, zero-padded to a multiple of 4.
- Continuation flag: 0 = the whole record in one part; 1 = first part, 2 = middle part, 3 = last part. The
  writer splits a payload wherever the magic number occurs at a 4-byte-aligned position of the payload and
  drops those 4 bytes, so the reader joins the parts with the magic number between them. docs/datasets-and-evaluation.md
  §4.13 says the flag can be ignored for the insightface files; reading it costs nothing and makes a payload that
  happens to contain the magic word read back whole instead of cut short.
- A payload starts with the 24-byte ``IRHeader``: flag (uint32), label (float32), id (uint64), id2 (uint64),
  little-endian, no padding. When flag > 0 the header's label field is not used and ``flag`` float32 labels
  follow the header. The rest of the payload is the encoded image (JPEG in insightface's files).

Malformed input raises ``DatasetFormatError`` naming the file and the record key with its byte offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from .errors import DatasetFormatError

RECORDIO_MAGIC = 0xCED7230A
_PART_HEADER = struct.Struct("<II")
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_HEADER = struct.Struct("<IfQQ")

# Continuation flags of a part (upper 3 bits of the length word).
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3


@dataclass(frozen=True)
class IRRecord:
    """One unpacked record: the IRHeader fields, its labels (the header's float when flag == 0, else the
    ``flag`` floats after the header) and the bytes after them (the encoded image)."""

    flag: int
    labels: tuple[float, ...]
    id: int
    id2: int
    data: bytes


def record_location(key: int, offset: int) -> str:
    return f"record {key} at byte {offset}"


def read_record(handle: BinaryIO, offset: int, file_size: int, path: str, key: int) -> bytes:
    """The payload of the record whose first part starts at byte ``offset`` of the open ``.rec`` file, its parts
    joined. ``key`` only names the record in errors."""
    where = record_location(key, offset)
    if offset >= file_size:
        raise DatasetFormatError(f"the index points past the end of the file ({file_size} bytes)", path, where)
    handle.seek(offset)
    parts, position, expect_continuation = [], offset, False
    while True:
        head = handle.read(_PART_HEADER.size)
        if len(head) < _PART_HEADER.size:
            raise DatasetFormatError(f"record cut short: the file ends at byte {file_size} inside a part header "
                                     f"(part {len(parts)} at byte {position})", path, where)
        magic, length_word = _PART_HEADER.unpack(head)
        if magic != RECORDIO_MAGIC:
            raise DatasetFormatError(f"expected the RecordIO magic number 0x{RECORDIO_MAGIC:08X} at byte {position}, "
                                     f"found 0x{magic:08X}", path, where)
        flag, length = length_word >> 29, length_word & _LENGTH_MASK
        if flag not in ((MIDDLE, LAST) if expect_continuation else (WHOLE, FIRST)):
            state = "a continuation part" if expect_continuation else "a whole record or a first part"
            raise DatasetFormatError(f"part at byte {position} has continuation flag {flag}, expected {state}",
                                     path, where)
        padded = (length + 3) & ~3
        body = handle.read(padded)
        if len(body) < padded:
            raise DatasetFormatError(f"record cut short: a part of {length} bytes starts at byte "
                                     f"{position + _PART_HEADER.size}, but the file ends at byte {file_size}",
                                     path, where)
        parts.append(body[:length])
        position += _PART_HEADER.size + padded
        if flag in (WHOLE, LAST):
            return _MAGIC_BYTES.join(parts)
        expect_continuation = True


def unpack_ir_record(payload: bytes, path: str, key: int, offset: int) -> IRRecord:
    """Split a record payload into its IRHeader fields, labels and image bytes."""
    if len(payload) < IR_HEADER.size:
        raise DatasetFormatError(f"payload of {len(payload)} bytes is shorter than the {IR_HEADER.size}-byte "
                                 "IRHeader", path, record_location(key, offset))
    flag, label, record_id, record_id2 = IR_HEADER.unpack_from(payload)
    if flag == 0:
        return IRRecord(flag, (label,), record_id, record_id2, payload[IR_HEADER.size:])
    end = IR_HEADER.size + 4 * flag
    if len(payload) < end:
        raise DatasetFormatError(f"IRHeader flag {flag} announces {flag} float labels ({end} bytes with the header) "
                                 f"but the payload has {len(payload)} bytes", path, record_location(key, offset))
    labels = struct.unpack_from(f"<{flag}f", payload, IR_HEADER.size)
    return IRRecord(flag, labels, record_id, record_id2, payload[end:])


def parse_index_line(line: bytes) -> tuple[int, int]:
    """``key<TAB>offset`` -> (key, offset); ``ValueError`` describing the line otherwise."""
    fields = line.split()
    if len(fields) != 2:
        raise ValueError(f"expected 'key<TAB>byte_offset', got {line.decode('latin-1').rstrip()!r}")
    try:
        key, offset = int(fields[0]), int(fields[1])
    except ValueError:
        raise ValueError(f"expected two integers 'key<TAB>byte_offset', got "
                         f"{line.decode('latin-1').rstrip()!r}") from None
    if key < 0 or offset < 0:
        raise ValueError(f"key and byte offset must not be negative, got {key} and {offset}")
    return key, offset


__all__ = ["IRRecord", "IR_HEADER", "RECORDIO_MAGIC", "parse_index_line", "read_record", "record_location",
           "unpack_ir_record"]
