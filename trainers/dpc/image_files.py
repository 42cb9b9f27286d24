"""Image files, without torch: a full decode whose errors name the file (``open_image``), and the up-front checks
of a split's files: ``image_problem`` (cheap: header and end marker) and ``decoder_warning`` (a full, strict JPEG
decode that reports damaged data PIL decodes without a word).

PIL's JPEG decoder silences libjpeg's warnings: a file damaged inside its scan data (header and end marker
intact) decodes to noise. libjpeg-turbo's TurboJPEG API (through ``simplejpeg``) can report them instead.
"""
from __future__ import annotations

import io
import os
from typing import Optional

from PIL import Image

from .errors import UserError
from .files import error_summary

IMAGE_HINT = ("A damaged or non-image file (an interrupted download, copy or extraction?) must be replaced "
              "with an intact copy: re-extract or re-download the dataset (see CoOp's DATASETS.md).")

# what PIL raises for damaged files: OSError (truncated, unidentified), SyntaxError (broken PNG chunks), ...
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

# bytes every complete file of these formats ends with (JPEG: EOI marker, PNG: IEND chunk type)
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_TAIL_BYTES = 1024
_JPEG_START = b"\xff\xd8"


class ImageFileError(UserError, OSError):
    """An image file cannot be read; the message names the file(s) and says what to do."""


def open_image(path: str, data: Optional[bytes] = None) -> Image.Image:
    """Decode ``path`` (or its bytes ``data``) to an RGB image; any failure names the file."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            return img.convert("RGB")  # decodes everything: a truncated file fails here, not later
    except DECODE_ERRORS as err:
        raise ImageFileError(f"cannot read image {path} ({error_summary(err)}). {IMAGE_HINT}") from err


def read_negative(path: str) -> bytes:
    """The encoded bytes of a negative image; a file that cannot be read is an error naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ImageFileError(f"cannot read negative image {path} ({error_summary(err)}). {IMAGE_HINT}") from err


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a readable image, or None; cheap for intact files.

    Reads the header (PIL opens lazily) and, for JPEG and PNG, looks for the format's end marker
    in the last KiB, which a truncated file lacks. Only a file without it is decoded in full, so
    a complete file with trailing bytes after the marker still passes.
    """
    try:
        with Image.open(path) as img:
            marker = _END_MARKERS.get(img.format)
        if marker is None:
            return None
        with open(path, "rb") as f:
            f.seek(max(os.path.getsize(path) - _TAIL_BYTES, 0))
            if marker in f.read():
                return None
        with Image.open(path) as img:
            img.load()
    except DECODE_ERRORS as err:
        return error_summary(err)
    return None


def decoder_warning(path: str) -> Optional[str]:
    """What libjpeg reports about damaged data in the JPEG ``path`` that PIL still decodes (e.g. 'Corrupt JPEG
    data: 214 extraneous bytes before marker 0xd9'), or None: an intact file, or not a JPEG. A file PIL cannot
    decode either is ``image_problem``'s (an ``ImageFileError`` when it is loaded). About one decode's time."""
    import simplejpeg  # libjpeg-turbo's TurboJPEG API; imported here so that importing this module stays cheap

    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_JPEG_START):
        return None
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)  # stops at libjpeg's first warning
    except ValueError as err:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
        except DECODE_ERRORS:
            return None  # not a warning: PIL fails as well, and the run stops where it loads the file
        return str(err)
    return None
