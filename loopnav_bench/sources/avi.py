"""Read the JPEG bitstream of every frame of an MJPG .avi, byte for byte, without decoding or re-encoding.

An AVI file is a sequence of RIFF chunks (`fourcc, uint32 little-endian size, data, one pad byte if size is odd`):

    RIFF 'AVI '  LIST 'hdrl' (avih, LIST 'strl' per stream: strh, strf, ...)  LIST 'movi' (frame chunks)  idx1
    RIFF 'AVIX'  LIST 'movi' (more frame chunks)                      OpenDML extension, once a file passes ~1 GB

Frame chunks of stream n are named `{n:02d}dc` (compressed) or `{n:02d}db`; they may be grouped in `LIST 'rec '` and
interleaved with `ix##` index and `JUNK` padding chunks. We take the first video stream (strh type 'vids'), require the
MJPG codec, and return its chunks' payloads in file order: each payload is one complete JPEG (SOI ... EOI).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

JPEG_SOI = b"\xff\xd8"
MJPEG_CODECS = {b"MJPG", b"mjpg", b"AVRn", b"LJPG", b"dmb1"}  # four-character codes of motion-JPEG streams


class AviError(ValueError):
    """An .avi file that is not a readable MJPG AVI; the message names the file and the problem."""


def _chunks(f: BinaryIO, start: int, end: int, path: Path) -> Iterator[tuple[bytes, int, int]]:
    """Yield (fourcc, data offset, data size) for the chunks laid end to end in [start, end)."""
    position = start
    while position + 8 <= end:
        f.seek(position)
        fourcc, size = struct.unpack("<4sI", f.read(8))
        if position + 8 + size > end:
            raise AviError(f"{path}: chunk {fourcc!r} at byte {position} runs past its container (truncated file?)")
        yield fourcc, position + 8, size
        position += 8 + size + (size & 1)  # chunks are padded to an even length


def _video_stream(f: BinaryIO, offset: int, size: int, path: Path) -> tuple[int, bytes]:
    """The index and codec of the first video stream described in LIST 'hdrl'."""
    stream = 0
    for fourcc, data, length in _chunks(f, offset, offset + size, path):
        if fourcc != b"LIST":
            continue
        f.seek(data)
        if f.read(4) != b"strl":
            continue
        for inner, inner_data, inner_length in _chunks(f, data + 4, data + length, path):
            if inner == b"strh" and inner_length >= 8:
                f.seek(inner_data)
                kind, handler = struct.unpack("<4s4s", f.read(8))
                if kind == b"vids":
                    return stream, handler
        stream += 1
    raise AviError(f"{path}: no video stream in the AVI header")


def read_mjpeg_frames(path: str | Path) -> list[bytes]:
    """Every frame of the first video stream of an MJPG .avi as its original JPEG bytes, in order."""
    path = Path(path)
    frames: list[bytes] = []
    chunk_names: tuple[bytes, bytes] | None = None
    with open(path, "rb") as f:
        file_size = f.seek(0, 2)
        if file_size < 12:
            raise AviError(f"{path}: too short to be an AVI file ({file_size} bytes)")
        for index, (fourcc, data, size) in enumerate(_chunks(f, 0, file_size, path)):
            f.seek(data)
            form = f.read(4)
            if fourcc != b"RIFF" or form != (b"AVI " if index == 0 else b"AVIX"):
                if index == 0:
                    raise AviError(f"{path}: not an AVI file (starts with {fourcc!r} {form!r})")
                continue  # trailing junk after the RIFF forms
            for list_id, list_data, list_size in _chunks(f, data + 4, data + size, path):
                if list_id != b"LIST":
                    continue
                f.seek(list_data)
                kind = f.read(4)
                if kind == b"hdrl":
                    stream, codec = _video_stream(f, list_data + 4, list_size - 4, path)
                    if codec not in MJPEG_CODECS:
                        raise AviError(f"{path}: video codec {codec!r} is not motion JPEG")
                    chunk_names = (b"%02ddc" % stream, b"%02ddb" % stream)
                elif kind == b"movi":
                    if chunk_names is None:
                        raise AviError(f"{path}: frame data before the AVI header")
                    frames += _movi_frames(f, list_data + 4, list_data + list_size, chunk_names, path)
    if chunk_names is None:
        raise AviError(f"{path}: no AVI header (LIST 'hdrl')")
    return frames


def _movi_frames(f: BinaryIO, start: int, end: int, names: tuple[bytes, bytes], path: Path) -> list[bytes]:
    frames = []
    for fourcc, data, size in _chunks(f, start, end, path):
        if fourcc == b"LIST":  # LIST 'rec ' groups the chunks of one time step
            f.seek(data)
            if f.read(4) == b"rec ":
                frames += _movi_frames(f, data + 4, data + size, names, path)
        elif fourcc in names:
            f.seek(data)
            payload = f.read(size)
            if not payload.startswith(JPEG_SOI):
                # An empty chunk is a "drop frame" (repeat the previous one); LoopNav's writer never emits them.
                raise AviError(f"{path}: video chunk {len(frames)} at byte {data - 8} is not a JPEG ({size} bytes)")
            frames.append(payload)
    return frames
