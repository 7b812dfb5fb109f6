"""Image checks by content (never by name or declared type), and the optional `fit` recompression.

media/uploadimg accepts JPEG or PNG under 1 MB (docs/wechat-protocol.md §10). We accept at most 1,048,576 bytes.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from uploads.errors import EmptyFile, ImageDimensionsTooLarge, ImageRejected, ImageTooLarge, InvalidFileType

MAX_UPLOAD_BYTES = 1_048_576
#: With fit=true, a larger valid image is accepted as input and made to fit.
MAX_FIT_INPUT_BYTES = 20 * 1024 * 1024
#: Refuse decompression bombs: a small file that claims huge dimensions.
MAX_PIXELS = 40_000_000

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    content_type: str
    width: int
    height: int
    sha256: str
    original_size: int
    fitted: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


def sniff_content_type(data: bytes) -> str | None:
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if data.startswith(PNG_MAGIC):
        return "image/png"
    return None


_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG"}


def _decode(data: bytes, content_type: str, *, full_size: bool = True) -> tuple[Image.Image, int, int]:
    """Decode every byte, so truncated or corrupt files are refused here and not by WeChat.

    Returns the image and its real dimensions. Without `full_size`, a JPEG is decoded with DCT scaling
    (Pillow's draft mode, 1/8 of each side): the whole entropy-coded stream is still read and checked,
    but the inverse transform costs a fraction, which matters on the accept path.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[content_type]])
            if probe.width * probe.height > MAX_PIXELS:
                raise ImageDimensionsTooLarge(f"{probe.width}x{probe.height} pixels is more than {MAX_PIXELS:,} pixels.")
            probe.verify()  # structure and (for PNG) chunk CRCs
            image = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[content_type]])
            width, height = image.size
            if not full_size and content_type == "image/jpeg":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()  # decodes every pixel: truncation and corrupt data show up here
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDimensionsTooLarge() from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error):
        raise InvalidFileType() from None
    return image, width, height


def check_image(data: bytes, *, fit: bool = False) -> CheckedImage:
    """Validate `data` as a JPEG or PNG WeChat will take; with `fit`, shrink an oversized one."""
    if not data:
        raise EmptyFile()
    content_type = sniff_content_type(data)
    if content_type is None:
        raise InvalidFileType("Only JPEG and PNG images are accepted (checked by content).")
    limit = MAX_FIT_INPUT_BYTES if fit else MAX_UPLOAD_BYTES
    if len(data) > limit:
        raise ImageTooLarge(
            f"The image is {len(data):,} bytes; the limit is {limit:,} bytes"
            + ("" if fit else " (send fit=true to have it recompressed).")
        )
    fits = len(data) <= MAX_UPLOAD_BYTES
    image, width, height = _decode(data, content_type, full_size=not fits)
    if fits:
        return CheckedImage(data, content_type, width, height, hashlib.sha256(data).hexdigest(), len(data))
    fitted, width, height = fit_image(image, content_type)
    return CheckedImage(fitted, content_type, width, height, hashlib.sha256(fitted).hexdigest(), len(data), fitted=True)


#: `Image.info` entries that survive `fit`: they change the pixels' meaning, not who or where.
_KEPT_INFO = frozenset({"icc_profile", "transparency"})


def fit_image(image: Image.Image, content_type: str, *, limit: int = MAX_UPLOAD_BYTES) -> tuple[bytes, int, int]:
    """Recompress, then downscale, until the encoded image fits; EXIF orientation applied, metadata dropped.

    JPEG: quality steps 90 -> 60, then downscales. PNG: a lossless save, then a 256-colour palette
    that keeps alpha, then downscales; transparency is kept throughout. Each downscale aims straight
    under the limit (the encoded size follows the pixel count), so a 20 MB input takes two or three
    rounds of encoding instead of a dozen.
    """
    image = ImageOps.exif_transpose(image)  # keep what the viewer saw; the EXIF tag itself is dropped
    # Pillow re-writes some of `info` on save (a JPEG's COM comment, XMP): keep only what changes how
    # the image looks (colour profile, PNG transparency) and drop every other piece of metadata.
    image.info = {k: v for k, v in image.info.items() if k in _KEPT_INFO}
    is_png = content_type == "image/png"
    if not is_png and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    scale = 1.0
    base = image
    for _ in range(_MAX_FIT_ROUNDS):
        if scale < 1.0:
            size = (max(1, int(base.width * scale)), max(1, int(base.height * scale)))
            image = base.resize(size, Image.Resampling.LANCZOS)
        smallest = None
        candidates = _png_candidates(image, lossless=scale == 1.0) if is_png else _jpeg_candidates(image, limit)
        for candidate in candidates:
            if len(candidate) <= limit:
                return candidate, image.width, image.height
            smallest = min(smallest or len(candidate), len(candidate))
        scale *= min(0.9, math.sqrt(limit / smallest) * 0.95)
    raise ImageTooLarge("The image could not be made to fit in 1 MB.")


_MAX_FIT_ROUNDS = 12


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _jpeg_candidates(image: Image.Image, limit: int):
    for quality in (90, 80, 70, 60):
        plain = _encode(image, "JPEG", quality=quality)
        if len(plain) > limit * 1.1:
            yield plain  # far off: do not spend an optimizing pass on it
            continue
        # Optimized Huffman tables only shrink the file, and cost a second pass: only for a likely winner.
        optimized = _encode(image, "JPEG", quality=quality, optimize=True)
        yield min(plain, optimized, key=len)


def _png_candidates(image: Image.Image, *, lossless: bool):
    palette_able = image.mode in ("RGB", "RGBA")
    if lossless or not palette_able:
        yield _encode(image, "PNG", optimize=True)
    if palette_able:
        yield _encode(image.quantize(colors=256, method=Image.Quantize.FASTOCTREE), "PNG", optimize=True)
