"""Image checks by content (never by name or declared type), and the optional `fit` recompression.

media/uploadimg accepts JPEG or PNG under 1 MB (docs/wechat-protocol.md §10). We accept at most 1,048,576 bytes.

Memory is bounded before anything is decoded (docs/architecture.md §3.5): one request may grow a web
process by at most 64 MB, so the pixel cap and the decode budget below are read from the header and an
image whose decode would need more is refused (`image_dimensions_too_large`). bench/memory.py measures it.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from uploads.errors import EmptyFile, ImageDimensionsTooLarge, ImageRejected, ImageTooLarge, InvalidFileType

MAX_UPLOAD_BYTES = 1_048_576
#: Refuse decompression bombs: a small file that claims huge dimensions. A baseline JPEG is decoded at
#: 1/8 of each side on the accept path, so this cap is not what bounds its memory; the budget below is.
MAX_PIXELS = 24_000_000
#: What decoding one image may hold, estimated from its header: the pixels (Pillow keeps 4 bytes for
#: RGB, RGBA and grey+alpha, 2 for 16-bit grey, 1 for grey and palette) and, for a progressive or
#: multi-scan JPEG, libjpeg's whole-image coefficient buffer (2 bytes a sample, at full size whatever the
#: output scale). 40 MB: a truecolour PNG of 10 million pixels (1,080 x 9,259).
MAX_DECODE_BYTES = 40_000_000
#: With fit, the input itself (up to UPLOAD_FIT_MAX_BYTES) stays in memory while it is decoded: less
#: room for the decode (an RGBA PNG of 8 million pixels; a JPEG is decoded at 1/2, 1/4 or 1/8 scale).
MAX_FIT_DECODE_BYTES = 32_000_000
#: fit works on at most this many pixels: a larger image is scaled down once, right after decoding (a
#: 1 MB JPEG rarely holds more at quality 60-90, and WeChat shows article images at most 1,080 wide).
MAX_FIT_WORKING_PIXELS = 2_000_000

# Pillow keeps the text of a PNG's tEXt/zTXt/iTXt chunks in memory, up to 64 MB by default (a few
# hundred bytes of zTXt inflate to that): keep 4 MB (each chunk still at most 1 MB, Pillow's default).
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fit_input_limit() -> int:
    """The largest input `fit` takes (UPLOAD_FIT_MAX_BYTES, default 10 MiB)."""
    return settings.UPLOAD_FIT_MAX_BYTES


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


def _pixel_bytes(mode: str) -> int:
    """Bytes a pixel takes in a decoded Pillow image of this mode."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _jpeg_first_scan_components(data: bytes) -> int | None:
    """How many components the first scan (SOS) carries; None when the markers cannot be followed."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker == 0xDA:
            return data[i + 4] if i + 4 < len(data) else None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _jpeg_coefficient_bytes(probe: Image.Image, data: bytes) -> int:
    """libjpeg keeps every DCT coefficient of the image (2 bytes each, at full size whatever the output
    scale) when it cannot decode in one pass: a progressive file, or a sequential one whose first scan
    does not carry every component. 0 when it can."""
    components = getattr(probe, "layer", None) or []
    multi_scan = bool(probe.info.get("progressive")) or _jpeg_first_scan_components(data) != len(components)
    if not multi_scan:
        return 0
    width, height = probe.size
    h_max = max((h for _, h, _, _ in components), default=1) or 1
    v_max = max((v for _, _, v, _ in components), default=1) or 1
    blocks = sum(
        math.ceil(width * h / h_max / 8) * math.ceil(height * v / v_max / 8) for _, h, v, _ in components
    ) if components else math.ceil(width / 8) * math.ceil(height / 8) * 4
    return blocks * 64 * 2


def _decode_cost(probe: Image.Image, data: bytes, content_type: str, scale: int) -> int:
    """Bytes decoding `probe` at 1/`scale` of each side would hold (see MAX_DECODE_BYTES)."""
    width, height = probe.size
    cost = math.ceil(width / scale) * math.ceil(height / scale) * _pixel_bytes(probe.mode)
    if content_type == "image/jpeg":
        cost += _jpeg_coefficient_bytes(probe, data)
    return cost


def _refuse_dimensions(width: int, height: int, cost: int, budget: int) -> ImageDimensionsTooLarge:
    return ImageDimensionsTooLarge(
        f"{width}x{height} pixels would take {math.ceil(cost / 1e6)} MB to decode; the limit is "
        f"{budget // 1_000_000} MB (for example, a truecolour PNG of at most {budget // 4:,} pixels)."
    )


def _decode(data: bytes, content_type: str, *, for_fit: bool = False) -> tuple[Image.Image, int, int]:
    """Decode every byte, so truncated or corrupt files are refused here and not by WeChat.

    Returns the image and the file's real dimensions. Checking only (not `for_fit`), a JPEG is decoded
    with DCT scaling (Pillow's draft mode, 1/8 of each side): the whole entropy-coded stream is still
    read and checked, but the output and the inverse transform cost a fraction. For fit, a JPEG is
    decoded at the largest scale that stays within MAX_FIT_DECODE_BYTES, and the image is then scaled
    down to MAX_FIT_WORKING_PIXELS before this returns (the full-size decode is freed here).
    """
    budget = MAX_FIT_DECODE_BYTES if for_fit else MAX_DECODE_BYTES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[content_type]])
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ImageDimensionsTooLarge(f"{width}x{height} pixels is more than {MAX_PIXELS:,} pixels.")
            scale = 1
            if content_type == "image/jpeg":
                scale = 8
                if for_fit:  # the largest output the budget allows: 1, 1/2, 1/4 or 1/8 of each side
                    scale = next((s for s in (1, 2, 4) if _decode_cost(probe, data, content_type, s) <= budget), 8)
            cost = _decode_cost(probe, data, content_type, scale)
            if cost > budget:
                raise _refuse_dimensions(width, height, cost, budget)
            if content_type == "image/png":
                probe.verify()  # chunk CRCs; it leaves the file unusable, so it is opened again to decode
                image = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[content_type]])
            else:  # Pillow's verify() checks nothing in a JPEG: the decode below is the check
                image = probe
            if scale > 1 and image.draft(image.mode, (max(1, width // scale), max(1, height // scale))) is None:
                # Pillow could not scale this one: it decodes at full size, so that is what must fit.
                cost = _decode_cost(image, data, content_type, 1)
                if cost > budget:
                    raise _refuse_dimensions(width, height, cost, budget)
            image.load()  # decodes every pixel: truncation and corrupt data show up here
            if for_fit and image.width * image.height > MAX_FIT_WORKING_PIXELS:
                ratio = math.sqrt(MAX_FIT_WORKING_PIXELS / (image.width * image.height))
                size = (max(1, int(image.width * ratio)), max(1, int(image.height * ratio)))
                image = downscale(image, size)  # the full-size pixels are freed here
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDimensionsTooLarge() from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, ZeroDivisionError):
        raise InvalidFileType() from None
    return image, width, height


#: Source pixels resized per band by `downscale`.
_BAND_PIXELS = 250_000


def downscale(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A LANCZOS resize to `size`, done in horizontal bands so that it never holds a second full-size copy.

    Pillow's own resize converts an RGBA image to premultiplied alpha first (a full copy) and keeps a
    width-resized intermediate (new width x old height): 1.5 to 2 times the image. Band by band, only
    a band is copied at a time. Each band is cut with the filter's reach on both sides and resized with
    a source `box`, so the result is a whole-image resize's (to a rounding step; with alpha, a few more
    steps where a pixel is nearly transparent).
    """
    if image.mode in ("1", "P"):  # Pillow resizes these by nearest neighbour anyway, without copies
        return image.resize(size, Image.Resampling.LANCZOS)
    width, height = image.size
    out_width, out_height = size
    scale = height / out_height
    reach = 3 * max(scale, 1.0) + 2  # LANCZOS reaches 3 output pixels each way, in source pixels
    rows = max(1, int(_BAND_PIXELS / width / scale))  # output rows per band
    out = Image.new(image.mode, size)
    lanczos = Image.Resampling.LANCZOS
    premultiplied = {"RGBA": "RGBa", "LA": "La"}.get(image.mode)  # as Pillow resizes alpha
    for top in range(0, out_height, rows):
        bottom = min(out_height, top + rows)
        src_top, src_bottom = top * scale, bottom * scale
        cut_top, cut_bottom = max(0, math.floor(src_top - reach)), min(height, math.ceil(src_bottom + reach))
        band = image.crop((0, cut_top, width, cut_bottom))
        if premultiplied:
            band = band.convert(premultiplied)
        # Across, then down: the order of Pillow's whole-image resize (the rounding in between matters).
        band = band.resize((out_width, cut_bottom - cut_top), lanczos)
        band = band.resize((out_width, bottom - top), lanczos, box=(0, src_top - cut_top, out_width, src_bottom - cut_top))
        out.paste(band.convert(image.mode) if premultiplied else band, (0, top))
    out.info = dict(image.info)
    return out


def check_image(data: bytes, *, fit: bool = False, sha256: str | None = None) -> CheckedImage:
    """Validate `data` as a JPEG or PNG WeChat will take; with `fit`, shrink an oversized one.

    `sha256`: the caller's hex SHA-256 of `data`, if it has one (not computed twice)."""
    if not data:
        raise EmptyFile()
    content_type = sniff_content_type(data)
    if content_type is None:
        raise InvalidFileType("Only JPEG and PNG images are accepted (checked by content).")
    limit = fit_input_limit() if fit else MAX_UPLOAD_BYTES
    if len(data) > limit:
        raise ImageTooLarge(
            f"The image is {len(data):,} bytes; the limit is {limit:,} bytes"
            + ("." if fit else " (send fit=true to have it recompressed).")
        )
    fits = len(data) <= MAX_UPLOAD_BYTES
    if fits:
        _, width, height = _decode(data, content_type)
        return CheckedImage(data, content_type, width, height, sha256 or hashlib.sha256(data).hexdigest(), len(data))
    # The decoded image is passed on without a name here, so that fit_image can free it as it goes.
    fitted, width, height = fit_image(_decode(data, content_type, for_fit=True)[0], content_type)
    return CheckedImage(fitted, content_type, width, height, hashlib.sha256(fitted).hexdigest(), len(data), fitted=True)


#: `Image.info` entries that survive `fit`: they change the pixels' meaning, not who or where.
_KEPT_INFO = frozenset({"icc_profile", "transparency"})


def fit_image(image: Image.Image, content_type: str, *, limit: int = MAX_UPLOAD_BYTES) -> tuple[bytes, int, int]:
    """Recompress, then downscale, until the encoded image fits; EXIF orientation applied, metadata dropped.

    JPEG: quality steps 90 -> 60, then downscales. PNG: a lossless save, then a 256-colour palette
    that keeps alpha, then downscales; transparency is kept throughout. Each downscale aims straight
    under the limit (the encoded size follows the pixel count), so a 10 MB input takes two or three
    rounds of encoding instead of a dozen. `image` is the caller's to give away: it is transposed in place.
    """
    # Keep what the viewer saw; the EXIF tag itself is dropped. In place: no second copy of the pixels.
    ImageOps.exif_transpose(image, in_place=True)
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
            image = None  # the previous round's pixels go before the next round's are made
            image = downscale(base, size)
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
