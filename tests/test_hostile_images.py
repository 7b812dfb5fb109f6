"""A corpus of hostile image files (bench/hostile_images.py): each is refused with a clear code (or, if
harmless, accepted), never a crash, and one request with any of them grows a web process by at most
64 MB (measured in a fresh process per case, as bench/memory.py does)."""

from __future__ import annotations

import io
import zlib

import pytest
from PIL import Image

from bench.hostile_images import png as _png
from bench.hostile_images import png_chunk as _chunk
from uploads.images import MAX_PIXELS, ImageRejected, check_image


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


# -- memory: one request, any image, at most 64 MB ---------------------------------------------------------


def _case_names() -> list[str]:
    from bench.hostile_images import corpus

    return [c.name for c in corpus(max_pixels=MAX_PIXELS, fit_input_bytes=10 * 1024 * 1024)]


@pytest.fixture(scope="module")
def memory_bench(tmp_path_factory):
    """bench/memory.py's set-up: a migrated SQLite database in a temporary directory, an API key, and the
    corpus at the limits in force. Each case then runs in its own fresh Python process."""
    from pathlib import Path

    from bench.memory import Bench

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("measures with /proc (Linux)")
    return Bench(tmp_path_factory.mktemp("memory"))


@pytest.mark.parametrize("name", _case_names())
def test_one_request_grows_a_web_process_by_at_most_64_mb(memory_bench, name):
    """A fresh process per case (bench/memory.py): Django warmed up with two small uploads, the kernel's
    peak-RSS mark reset, then one POST /api/v1/uploads/ through Django's WSGI handler; the growth is
    VmHWM after minus VmRSS before. Before issue 11, a 166 KB 6300x6300 PNG took 159 MB this way."""
    from bench.memory import BOUND_BYTES

    case = memory_bench.cases[name]
    result = memory_bench.measure(name)

    assert "error" not in result, result
    assert f"{result['status']} {result['code']}".startswith(case.expect), result
    assert result["growth_bytes"] <= BOUND_BYTES, (
        f"{name}: the request grew the process by {result['growth_bytes'] / 1e6:.1f} MB"
    )


# -- the decode budget ----------------------------------------------------------------------------------------


def test_progressive_jpeg_is_refused_by_its_coefficient_buffer_not_only_by_pixels():
    """libjpeg keeps every coefficient of a progressive JPEG (2 bytes a sample at full size) whatever the
    scale it outputs: 4,000 x 4,000 at 4:4:4 needs 96 MB although it is under the pixel cap."""
    from bench.hostile_images import pillow_jpeg

    progressive = pillow_jpeg((4000, 4000), progressive=True, subsampling=0)
    baseline = pillow_jpeg((4000, 4000), subsampling=0)
    assert 4000 * 4000 < MAX_PIXELS and len(progressive) < 1_048_576

    with pytest.raises(ImageRejected) as exc:
        check_image(progressive)
    assert exc.value.code == "image_dimensions_too_large"
    assert "MB to decode" in exc.value.detail
    assert check_image(baseline).width == 4000  # one pass at 1/8 scale: cheap


def test_sequential_jpeg_with_one_scan_per_component_counts_as_multi_scan():
    from bench.hostile_images import pillow_jpeg
    from uploads.images import _jpeg_first_scan_components

    jpeg = bytearray(pillow_jpeg((64, 64)))
    assert _jpeg_first_scan_components(bytes(jpeg)) == 3  # Pillow interleaves the three components
    sos = jpeg.index(b"\xff\xda")
    jpeg[sos + 4] = 1  # the first scan now claims to carry one component only
    assert _jpeg_first_scan_components(bytes(jpeg)) == 1


def test_many_text_chunks_are_refused_before_pillow_holds_64_mb_of_text():
    from bench.hostile_images import many_ztxt

    with pytest.raises(ImageRejected) as exc:
        check_image(many_ztxt(80))
    assert exc.value.code == "invalid_file_type"


def test_fit_scales_a_large_image_down_before_working_on_it(settings):
    """fit decodes, then works on at most MAX_FIT_WORKING_PIXELS: the result is never larger."""
    from bench.hostile_images import png_with_noise
    from uploads.images import MAX_FIT_WORKING_PIXELS

    data = png_with_noise((2600, 2600), 700)  # 6.8 megapixels, over 1 MB
    assert len(data) > 1_048_576

    checked = check_image(data, fit=True)

    assert checked.fitted and checked.size <= 1_048_576
    assert checked.width * checked.height <= MAX_FIT_WORKING_PIXELS
    assert abs(checked.width - checked.height) <= 1  # the aspect ratio is kept


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_banded_downscale_is_a_whole_image_resize(mode):
    import random

    from PIL import ImageChops

    from uploads.images import downscale

    rnd = random.Random(5)
    image = Image.frombytes("RGB", (1500, 1100), rnd.randbytes(1500 * 1100 * 3)).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size).point(lambda v: 128 + v // 2))

    for size in [(700, 513), (1499, 1099), (90, 40)]:
        ours, pillows = downscale(image, size), image.resize(size, Image.Resampling.LANCZOS)
        assert ours.size == size and ours.mode == mode
        worst = max(high for _, high in ImageChops.difference(ours.convert("RGBA"), pillows.convert("RGBA")).getextrema())
        assert worst <= (2 if mode == "RGBA" else 1), (size, worst)
