"""A corpus of hostile image files: each is refused with a clear code (or, if harmless, accepted),
never a crash, and never decoded into unbounded memory."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from uploads.images import MAX_PIXELS, ImageRejected, check_image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, idat: bytes, *, extra: bytes = b"", color_type: int = 0, depth: int = 8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_huge_dimensions_in_a_tiny_file_are_refused_before_decoding():
    # 100,000 x 100,000 grayscale declared; a few hundred bytes on the wire.
    bomb = _png(100_000, 100_000, zlib.compress(b"\0" * 1000))
    assert len(bomb) < 1000
    with pytest.raises(ImageRejected) as exc:
        check_image(bomb)
    assert exc.value.code == "image_dimensions_too_large"


def test_idat_zip_bomb_just_over_the_pixel_limit_is_refused():
    side = int(MAX_PIXELS**0.5) + 10
    row = b"\0" + b"\0" * side
    # Compresses ~1000:1; the declared size alone is enough to refuse it.
    bomb = _png(side, side, zlib.compress(row * 64, 9))
    with pytest.raises(ImageRejected) as exc:
        check_image(bomb)
    assert exc.value.code == "image_dimensions_too_large"


def test_compressed_text_chunk_bomb_is_refused():
    # zTXt whose text inflates to 200 MB: Pillow stops inflating at its text-chunk limit
    # (PngImagePlugin.MAX_TEXT_CHUNK, 1 MB) with a ValueError, which we answer as an invalid file.
    import tracemalloc

    payload = zlib.compress(b"A" * (200 * 1024 * 1024), 9)
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + payload)
    small = io.BytesIO()
    Image.new("L", (4, 4)).save(small, format="PNG")
    raw = small.getvalue()
    bomb = raw[:33] + ztxt + raw[33:]  # after the 8-byte signature and the 25-byte IHDR chunk
    assert len(bomb) < 1_048_576
    tracemalloc.start()
    try:
        with pytest.raises(ImageRejected) as exc:
            check_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.code == "invalid_file_type"
    assert peak < 32 * 1024 * 1024, f"{peak:,} bytes allocated: the text was inflated"


def test_zip_archive_behind_a_jpeg_magic_is_refused():
    fake = b"\xff\xd8\xff\xe0" + b"PK\x03\x04" + b"\0" * 200
    with pytest.raises(ImageRejected) as exc:
        check_image(fake)
    assert exc.value.code == "invalid_file_type"


def test_png_signature_followed_by_garbage_is_refused():
    with pytest.raises(ImageRejected) as exc:
        check_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert exc.value.code == "invalid_file_type"


def test_png_with_a_bad_crc_is_refused():
    good = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(good, format="PNG")
    data = bytearray(good.getvalue())
    data[29] ^= 0xFF  # inside IHDR's CRC
    with pytest.raises(ImageRejected) as exc:
        check_image(bytes(data))
    assert exc.value.code == "invalid_file_type"


def test_jpeg_html_polyglot_is_a_valid_jpeg_and_is_kept_byte_for_byte():
    """Trailing bytes after EOI (an HTML or ZIP polyglot) do not make a JPEG invalid. We never serve
    the bytes back as a web page (the admin shows them only as a data: URI <img>), so the harm is
    nil; WeChat receives exactly what the merchant sent."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(buf, format="JPEG")
    polyglot = buf.getvalue() + b"<html><script>alert(1)</script></html>"
    checked = check_image(polyglot)
    assert checked.content_type == "image/jpeg"
    assert checked.data == polyglot


@pytest.mark.parametrize(
    "payload",
    [b"GIF89a" + b"\0" * 32, b"RIFF\0\0\0\0WEBPVP8 ", b"BM" + b"\0" * 64, b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
    ids=["gif", "webp", "bmp", "svg"],
)
def test_other_formats_are_refused_by_content(payload):
    with pytest.raises(ImageRejected) as exc:
        check_image(payload)
    assert exc.value.code == "invalid_file_type"
