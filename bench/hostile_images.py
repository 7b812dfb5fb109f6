"""The hostile image corpus: files built to cost a server memory or CPU, and the worst images we accept.

Used by tests/test_hostile_images.py (each is refused with a clear code, or accepted, never a crash) and by
bench/memory.py (the peak memory one request with it costs a web process). Plain bytes, no Django: the
sizes that depend on our limits (the pixel cap, the `fit` input limit) are passed in.
"""

from __future__ import annotations

import io
import math
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def png(width: int, height: int, idat: bytes | None = None, *, extra: bytes = b"", color_type: int = 0,
        depth: int = 8, interlace: int = 0) -> bytes:
    """A PNG declaring `width` x `height`; without `idat`, all-zero rows compressed (a tiny file that
    inflates to width * height * channels bytes: the shape of an IDAT zip bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    if idat is None:
        idat = _zero_rows(width, height, _CHANNELS[color_type] * depth // 8, interlace=bool(interlace))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def _zero_rows(width: int, height: int, bytes_per_pixel: int, *, interlace: bool) -> bytes:
    """Compressed all-zero scanlines (filter byte 0 each), streamed so that building it stays small."""
    if interlace:  # Adam7: seven reduced images, each with its own scanlines
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        shapes = [(math.ceil(max(0, width - x0) / dx), math.ceil(max(0, height - y0) / dy))
                  for x0, y0, dx, dy in passes]
    else:
        shapes = [(width, height)]
    z = zlib.compressobj(9)
    out = []
    for w, h in shapes:
        if not w or not h:
            continue
        row = b"\0" * (1 + w * bytes_per_pixel)
        block = row * max(1, (4 << 20) // len(row))
        rows_per_block = len(block) // len(row)
        left = h
        while left:
            n = min(left, rows_per_block)
            out.append(z.compress(block[: n * len(row)]))
            left -= n
    out.append(z.flush())
    return b"".join(out)


def pillow_png(size: tuple[int, int], mode: str = "RGBA", color=(1, 2, 3, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def pillow_jpeg(size: tuple[int, int], *, progressive: bool = False, subsampling: int = 2, mode: str = "RGB",
                quality: int = 75) -> bytes:
    """A smooth (cheap to encode, small) JPEG; subsampling 0 is 4:4:4, 2 is 4:2:0."""
    image = Image.linear_gradient("L").resize(size)
    if mode != "L":
        image = Image.merge("RGB", (image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", progressive=progressive, subsampling=subsampling, quality=quality)
    return buf.getvalue()


def png_with_noise(size: tuple[int, int], noise_side: int = 640) -> bytes:
    """An RGBA PNG of `size`, one colour but for a square of noise (`noise_side` wide: 640 keeps it over
    1 MB; 1,600 makes it about 10 MB)."""
    image = Image.new("RGBA", size, (9, 8, 7, 255))
    rnd = random.Random(3)
    image.paste(Image.frombytes("RGBA", (noise_side, noise_side), rnd.randbytes(noise_side * noise_side * 4)))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def noise_jpeg(size: tuple[int, int], *, seed: int = 7) -> bytes:
    """A noise JPEG (quality 95, about 1.2 bytes a pixel)."""
    image = Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def noise_jpeg_about(total: int, *, seed: int = 7) -> bytes:
    """A noise JPEG (quality 95) of at most `total` bytes and close to it: the largest photo-like input
    `fit` takes."""
    rnd = random.Random(seed)
    side = int(math.sqrt(total / 1.2))  # noise at q95 costs about 1.2 bytes a pixel
    while True:
        image = Image.frombytes("RGB", (side, side), rnd.randbytes(side * side * 3))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=95)
        if buf.tell() <= total:
            return buf.getvalue()
        side = int(side * math.sqrt(total / buf.tell()) * 0.995)


def jpeg_with_app_segments(total: int) -> bytes:
    """A valid little JPEG of about `total` bytes, nearly all of it APPn segments (Pillow keeps them)."""
    small = pillow_jpeg((64, 48))
    segment_data = b"\0" * 65_000
    count = max(0, (total - len(small)) // (len(segment_data) + 4))
    segments = b"".join(
        b"\xff" + bytes([0xE3 + i % 12]) + struct.pack(">H", len(segment_data) + 2) + segment_data for i in range(count)
    )
    return small[:2] + segments + small[2:]


def padded_png(total: int) -> bytes:
    """A valid little PNG of exactly `total` bytes: a private ancillary chunk after IHDR carries the padding."""
    small = pillow_png((64, 48), "RGB", (200, 30, 30))
    return small[:33] + png_chunk(b"prVt", b"\0" * (total - len(small) - 12)) + small[33:]


def ztxt_bomb() -> bytes:
    """One zTXt chunk whose text inflates to 200 MB (Pillow stops at MAX_TEXT_CHUNK)."""
    payload = zlib.compress(b"A" * (200 * 1024 * 1024), 9)
    small = pillow_png((4, 4), "L", 0)
    return small[:33] + png_chunk(b"zTXt", b"Comment\0\0" + payload) + small[33:]


def many_ztxt(chunks: int = 80) -> bytes:
    """Many zTXt chunks of 1 MB of text each (a few hundred bytes on the wire): Pillow keeps up to
    MAX_TEXT_MEMORY of text per image."""
    payload = zlib.compress(b"A" * (1024 * 1024 - 64), 9)
    small = pillow_png((4, 4), "L", 0)
    texts = b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + payload) for i in range(chunks))
    return small[:33] + texts + small[33:]


def iccp_bomb() -> bytes:
    """An iCCP profile that inflates to 200 MB."""
    payload = zlib.compress(b"\0" * (200 * 1024 * 1024), 9)
    small = pillow_png((4, 4), "RGB", (1, 2, 3))
    return small[:33] + png_chunk(b"iCCP", b"icc\0\0" + payload) + small[33:]


def bad_crc_png() -> bytes:
    data = bytearray(pillow_png((8, 8), "RGB", (1, 2, 3)))
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is rewritten to claim `width` x `height`."""
    data = bytearray(pillow_jpeg((16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _side(pixels: int) -> int:
    return math.isqrt(pixels)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    #: the answer with the limits in force: "202", or the status and code of the refusal
    expect: str
    #: how the request asks for `fit`: None (it does not), "form" (a field before `media`), "query" (?fit=true)
    fit: str | None = None
    note: str = ""


_OK = "202"
_DIMENSIONS = "400 image_dimensions_too_large"
_INVALID = "400 invalid_file_type"
_TOO_LARGE = "413 image_too_large"


def corpus(*, max_pixels: int, fit_input_bytes: int, decode_bytes: int | None = None,
           fit_decode_bytes: int | None = None, upload_bytes: int = 1_048_576) -> list[Case]:
    """Every case, given the limits in force: the pixel cap, the decode budgets (bytes a decode may hold;
    None where there was none, i.e. 4 bytes a pixel at the cap) and the `fit` input limit. The worst
    accepted images sit at those limits."""
    decode_bytes = decode_bytes or 4 * max_pixels
    fit_decode_bytes = fit_decode_bytes or decode_bytes

    def side(bytes_per_pixel: float, budget: int = decode_bytes) -> int:
        """The largest square within both the pixel cap and `budget` (a 0.5 % margin for rounding)."""
        return min(_side(max_pixels), _side(int(budget * 0.995 / bytes_per_pixel)))

    over_cap = _side(max_pixels) + 10
    rgba, grey = side(4), side(1)
    rgba_fit = side(4, fit_decode_bytes)
    # progressive JPEGs: 2 bytes a coefficient, all of them (samples a pixel: 3 at 4:4:4, 1.5 at 4:2:0,
    # 4 for CMYK); checked at 1/8 scale, so the output adds 4/64 a pixel
    prog444, prog420, prog_cmyk = side(6 + 1 / 16), side(3 + 1 / 16), side(8 + 1 / 16)
    fit_limit_noise = _side((fit_input_bytes - 300_000) // 4)  # an RGBA noise square of about the fit limit
    at_cap = (_side(max_pixels),) * 2
    return [
        # PNG: IDAT inflates to width x height x channels; Pillow keeps 4 bytes a pixel (1 for grey)
        Case("png-100000x100000-tiny", lambda: png(100_000, 100_000, zlib.compress(b"\0" * 1000)),
             _DIMENSIONS, note="huge dimensions in a few hundred bytes"),
        Case("png-idat-bomb-over-cap", lambda: png(over_cap, over_cap), _DIMENSIONS,
             note=f"{over_cap}x{over_cap} grey zeros"),
        Case("png-6300x6300-rgba-166KB", lambda: pillow_png((6300, 6300)), _DIMENSIONS,
             note="one colour, saved by Pillow"),
        Case("png-6300x6300-rgba-166KB-fit", lambda: pillow_png((6300, 6300)), _DIMENSIONS, fit="form"),
        Case("png-rgba-largest", lambda: png(rgba, rgba, color_type=6), _OK,
             note=f"{rgba}x{rgba} RGBA zeros: the largest truecolour PNG accepted"),
        Case("png-rgba16-largest", lambda: png(rgba, rgba, color_type=6, depth=16), _OK, note="16-bit"),
        Case("png-rgba-interlaced-largest", lambda: png(rgba, rgba, color_type=6, interlace=1), _OK,
             note="Adam7"),
        Case("png-rgba-over-budget", lambda: png(rgba + 40, rgba + 40, color_type=6), _DIMENSIONS),
        Case("png-grey-largest", lambda: png(grey, grey), _OK, note=f"{grey}x{grey} grey zeros"),
        Case("png-rgba-largest-fit", lambda: png_with_noise((rgba_fit, rgba_fit)), _OK, fit="form",
             note=f"{rgba_fit}x{rgba_fit}, over 1 MB: decoded, scaled down, re-encoded"),
        Case("png-rgba-largest-fit-limit", lambda: png_with_noise((rgba_fit, rgba_fit), fit_limit_noise), _OK,
             fit="form", note="the same, about as large as fit takes (it stays in memory while decoded)"),
        Case("png-ztxt-200MB", ztxt_bomb, _INVALID, note="one zTXt chunk inflating to 200 MB"),
        Case("png-80-ztxt-1MB", many_ztxt, _INVALID, note="80 zTXt chunks of 1 MB of text each"),
        Case("png-iccp-200MB", iccp_bomb, _INVALID, note="an iCCP profile inflating to 200 MB"),
        Case("png-bad-crc", bad_crc_png, _INVALID),
        Case("png-signature-garbage", lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 64, _INVALID),
        # JPEG: decoded at 1/8 scale to check it, unless libjpeg must keep every coefficient (progressive)
        Case("jpeg-zip-behind-magic", lambda: b"\xff\xd8\xff\xe0" + b"PK\x03\x04" + b"\0" * 200, _INVALID),
        Case("jpeg-html-polyglot", lambda: pillow_jpeg((16, 16)) + b"<html><script>alert(1)</script></html>",
             _OK),
        Case("jpeg-claims-65000x65000", lambda: jpeg_claiming(65_000, 65_000), _DIMENSIONS),
        Case("jpeg-baseline-at-cap", lambda: pillow_jpeg(at_cap), _OK, note="4:2:0"),
        Case("jpeg-baseline-at-cap-fit", lambda: pillow_jpeg(at_cap, quality=98), _OK, fit="form",
             note="over 1 MB"),
        Case("jpeg-progressive-444-largest", lambda: pillow_jpeg((prog444,) * 2, progressive=True, subsampling=0),
             _OK, note=f"{prog444}x{prog444}: libjpeg holds every coefficient"),
        Case("jpeg-progressive-420-largest", lambda: pillow_jpeg((prog420,) * 2, progressive=True), _OK),
        Case("jpeg-progressive-cmyk-largest",
             lambda: pillow_jpeg((prog_cmyk,) * 2, progressive=True, subsampling=0, mode="CMYK"), _OK),
        Case("jpeg-progressive-444-at-cap", lambda: pillow_jpeg(at_cap, progressive=True, subsampling=0),
             _DIMENSIONS),
        Case("jpeg-progressive-420-largest-fit",
             lambda: pillow_jpeg((prog420,) * 2, progressive=True, quality=98), _OK, fit="form"),
        Case("jpeg-noise-largest-fit", lambda: noise_jpeg((rgba_fit, rgba_fit)), _OK, fit="form",
             note=f"{rgba_fit}x{rgba_fit} noise: decoded at full size for fit"),
        Case("jpeg-noise-fit-limit", lambda: noise_jpeg_about(fit_input_bytes - 65_536), _OK, fit="form",
             note="a photo-like JPEG just under the fit input limit"),
        Case("jpeg-app-segments-fit-limit", lambda: jpeg_with_app_segments(fit_input_bytes - 65_536), _OK,
             fit="form", note="a small image behind 10 MB of APPn segments"),
        # the body: without fit it stops at 1 MiB of image
        Case("body-5MiB-no-fit", lambda: padded_png(5 * upload_bytes), _TOO_LARGE),
        Case("body-5MiB-fit-in-query", lambda: padded_png(5 * upload_bytes), _OK, fit="query"),
        Case("body-over-fit-limit", lambda: padded_png(fit_input_bytes + 1), _TOO_LARGE, fit="form"),
        Case("body-20MiB-fit", lambda: padded_png(20 * upload_bytes), _TOO_LARGE, fit="form"),
        Case("gif", lambda: _other("GIF"), _INVALID),
        Case("webp", lambda: _other("WEBP"), _INVALID),
        Case("svg", lambda: b"<svg xmlns='http://www.w3.org/2000/svg' width='99999' height='99999'/>", _INVALID),
    ]


def _other(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format=fmt)
    return buf.getvalue()
