"""POST/GET /api/v1/uploads/: validation by content, idempotency, fit, tenant scoping, error shape.

The task is not run here (see test_upload_task.py); these tests stop at "accepted and enqueued".
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import time
import zlib

import pytest
from PIL import Image, PngImagePlugin

from tests.fixtures import image_bytes, media_file, noise_bytes
from uploads.images import MAX_UPLOAD_BYTES
from uploads.models import Upload, UploadBlob

URL = "/api/v1/uploads/"
CONTRACT_FIELDS = {
    "id", "status", "authorizer_appid", "url", "errcode", "errmsg", "permission_check", "attempts",
    "size", "content_type", "sha256", "created_at", "finished_at",
}


def post(client, data: bytes | None, appid: str | None, *, name: str = "image.png",
         content_type: str = "image/png", headers: dict | None = None, **fields):
    payload = dict(fields)
    if data is not None:
        payload["media"] = media_file(data, name, content_type)
    if appid is not None:
        payload["authorizer_appid"] = appid
    return client.post(URL, payload, format="multipart", headers=headers or {})


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"]


# -- image builders -------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_dimensions(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header claiming `width` x `height` pixels (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def png_padded_to(total: int) -> bytes:
    """A valid PNG of exactly `total` bytes: a private ancillary chunk after IHDR carries the padding."""
    png = image_bytes("PNG")
    pad = total - len(png) - 12  # a chunk costs 12 bytes around its data
    return png[:33] + png_chunk(b"prVt", b"\0" * pad) + png[33:]


def jpeg_padded_to(total: int) -> bytes:
    """A valid JPEG of exactly `total` bytes: COM segments (at most 65,537 bytes each) after SOI."""
    jpeg = image_bytes("JPEG")
    pad, segments = total - len(jpeg), []
    while pad:
        size = min(pad, 65_537)
        if 0 < pad - size < 4:  # the smallest segment is 4 bytes: leave room for it
            size -= 4
        segments.append(b"\xff\xfe" + struct.pack(">H", size - 2) + b"c" * (size - 4))
        pad -= size
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def rgba_with_alpha_gradient(size=(900, 900)) -> bytes:
    """Noise colours over a left-to-right alpha ramp: large as PNG, and transparency is easy to check."""
    noise = Image.open(io.BytesIO(noise_bytes("PNG", size, "RGB", seed=3))).convert("RGBA")
    ramp = Image.linear_gradient("L").rotate(90).resize(size)
    noise.putalpha(ramp)
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    return buf.getvalue()


# -- accepted -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "name", "content_type"), [
    ("PNG", "photo.png", "image/png"),
    ("JPEG", "photo.jpg", "image/jpeg"),
    ("PNG", "x.jpg", "image/jpeg"),  # the name and declared type lie; the content decides
    ("JPEG", "no-extension", "application/octet-stream"),
])
def test_real_png_and_jpeg_are_accepted_stored_and_enqueued_after_commit(
    api_client, authorizer, django_capture_on_commit_callbacks, published_tasks, fmt, name, content_type
):
    data = image_bytes(fmt)

    with django_capture_on_commit_callbacks() as callbacks:
        response = post(api_client, data, authorizer.appid, name=name, content_type=content_type)
        # Not enqueued before the record and its bytes are committed.
        assert published_tasks == []

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["content_type"] == f"image/{fmt.lower()}"
    assert body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert response["Location"] == f"/api/v1/uploads/{body['id']}/"
    upload = Upload.objects.get(pk=body["id"])
    assert bytes(UploadBlob.objects.get(upload=upload).data) == data
    assert len(callbacks) == 1
    callbacks[0]()
    assert published_tasks == [("uploads.upload_image", [body["id"]])]


@pytest.mark.parametrize("padded", [png_padded_to, jpeg_padded_to], ids=["png", "jpeg"])
def test_exactly_one_mebibyte_is_accepted_and_one_byte_more_is_refused(api_client, authorizer, padded):
    exact = padded(MAX_UPLOAD_BYTES)
    assert len(exact) == MAX_UPLOAD_BYTES

    accepted = post(api_client, exact, authorizer.appid)
    refused = post(api_client, padded(MAX_UPLOAD_BYTES + 1), authorizer.appid)

    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["size"] == MAX_UPLOAD_BYTES
    assert_refused(refused, 413, "image_too_large")


# -- refused by content ---------------------------------------------------------------------------------------


def _other_format(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format=fmt)
    return buf.getvalue()


def _corrupt_png_crc() -> bytes:
    png = bytearray(image_bytes("PNG"))
    idat = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[idat - 4:idat])
    png[idat + 4 + length] ^= 0xFF  # first byte of IDAT's CRC
    return bytes(png)


INVALID = {
    "gif": _other_format("GIF"),
    "webp": _other_format("WEBP"),
    "bmp": _other_format("BMP"),
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
    "truncated-jpeg": image_bytes("JPEG")[:-300],
    "truncated-png": image_bytes("PNG")[:-30],
    "png-bad-crc": _corrupt_png_crc(),
    "text-named-jpg": b"this is not an image, whatever its name says\n" * 20,
    "jpeg-magic-only": b"\xff\xd8\xff",
    "png-signature-only": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("kind", list(INVALID))
def test_anything_but_a_complete_jpeg_or_png_is_invalid_file_type(api_client, authorizer, kind):
    response = post(api_client, INVALID[kind], authorizer.appid, name="photo.jpg", content_type="image/jpeg")

    assert_refused(response, 400, "invalid_file_type")
    assert not Upload.objects.exists()


def test_empty_file_is_refused(api_client, authorizer):
    assert_refused(post(api_client, b"", authorizer.appid), 400, "empty_file")


def test_request_without_media_part_is_refused(api_client, authorizer):
    response = api_client.post(URL, {"authorizer_appid": authorizer.appid}, format="multipart")

    assert_refused(response, 400, "missing_media")


def test_image_over_one_mebibyte_is_refused_with_413(api_client, authorizer):
    data = noise_bytes("PNG", (700, 700), "RGB")  # noise does not compress: about 1.47 MB
    assert len(data) > MAX_UPLOAD_BYTES

    assert_refused(post(api_client, data, authorizer.appid), 413, "image_too_large")
    assert not Upload.objects.exists()


def test_huge_content_length_is_refused_before_the_body_is_read(api_client, authorizer):
    body = b"--b\r\nContent-Disposition: form-data; name=\"authorizer_appid\"\r\n\r\nwx\r\n--b--\r\n"

    response = api_client.generic(
        "POST", URL, body, content_type="multipart/form-data; boundary=b", CONTENT_LENGTH=str(500 * 1024 * 1024)
    )

    assert_refused(response, 413, "image_too_large")


@pytest.mark.parametrize(("width", "height"), [(30_000, 30_000), (7_000, 7_000)])
def test_decompression_bomb_is_refused_by_its_dimensions(api_client, authorizer, width, height):
    data = png_with_dimensions(width, height)
    assert len(data) < 200

    assert_refused(post(api_client, data, authorizer.appid), 400, "image_dimensions_too_large")


# -- a bounded body (issue 11: bounded cost per request) -----------------------------------------------------


class CountingStream(io.BytesIO):
    """The request body as the server's socket hands it over, counting what Django reads of it."""

    def __init__(self, body: bytes):
        super().__init__(body)
        self.consumed = 0

    def read(self, size=-1):
        data = super().read(size)
        self.consumed += len(data)
        return data

    def readline(self, size=-1):
        data = super().readline(size)
        self.consumed += len(data)
        return data


def multipart_body(*parts: tuple[str, bytes | str]) -> tuple[bytes, str]:
    """A multipart body with the parts in this order: `media` (and names ending in `.file`) as files."""
    boundary = "b0undary7c1d"
    out = []
    for name, value in parts:
        if name == "media" or name.endswith(".file"):
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name.removesuffix(".file")}"; '
                       f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + value + b"\r\n")
        else:
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(out) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def send_counted(client, body: bytes, content_type: str, *, query: str = "", content_length: int | None = -1):
    """POST `body` as a stream; `content_length` None leaves the header out (a chunked request), -1 is honest."""
    stream = CountingStream(body)
    extra = {"wsgi.input": stream, "CONTENT_TYPE": content_type}
    if content_length is not None:
        extra["CONTENT_LENGTH"] = str(len(body) if content_length == -1 else content_length)
    response = client.generic("POST", URL + (f"?{query}" if query else ""), b"", content_type=content_type, **extra)
    return response, stream.consumed


def test_without_fit_the_body_is_read_no_further_than_one_mebibyte_of_image(api_client, authorizer):
    body, content_type = multipart_body(("authorizer_appid", authorizer.appid), ("media", png_padded_to(5 * 2**20)))

    response, consumed = send_counted(api_client, body, content_type)

    assert_refused(response, 413, "image_too_large")
    assert "?fit=true" in response.json()["detail"]
    # 1 MiB of image, the envelope, and at most one 64 KiB chunk read ahead: never the 5 MiB.
    assert consumed <= MAX_UPLOAD_BYTES + 2 * 64 * 1024, consumed


def test_the_cap_holds_when_content_length_understates_or_is_absent(api_client, authorizer):
    body, content_type = multipart_body(("authorizer_appid", authorizer.appid), ("media", png_padded_to(5 * 2**20)))

    understated, read_understated = send_counted(api_client, body, content_type, content_length=1_000_000)
    chunked, read_chunked = send_counted(api_client, body, content_type, content_length=None)

    # Django reads no further than the declared length (the multipart is then cut short: no media part),
    # and a body without Content-Length is not read at all: neither buffers the 5 MiB.
    assert_refused(understated, 400, "missing_media")
    assert read_understated <= 1_000_000
    assert_refused(chunked, 400, "missing_media")
    assert read_chunked == 0


def test_many_file_parts_count_together(api_client, authorizer):
    parts = [(f"other{i}.file", b"x" * 300_000) for i in range(5)]  # 1.5 MB of files, none over 1 MiB
    body, content_type = multipart_body(("authorizer_appid", authorizer.appid), *parts,
                                        ("media", image_bytes()))

    response, consumed = send_counted(api_client, body, content_type)

    assert_refused(response, 413, "image_too_large")
    assert consumed <= MAX_UPLOAD_BYTES + 2 * 64 * 1024


def test_fit_in_the_query_string_raises_the_limit_before_the_body_is_read(api_client, authorizer):
    data = noise_bytes("JPEG", (1500, 1500), "RGB", quality=95)  # about 2.7 MB
    assert len(data) > 2 * MAX_UPLOAD_BYTES
    body, content_type = multipart_body(("authorizer_appid", authorizer.appid), ("media", data))

    response, consumed = send_counted(api_client, body, content_type, query="fit=true")

    assert response.status_code == 202, response.content
    assert response.json()["fitted"] is True and response.json()["original_size"] == len(data)
    assert consumed == len(body)


def test_fit_as_a_form_field_before_the_image_raises_the_limit_too(api_client, authorizer):
    data = noise_bytes("JPEG", (1500, 1500), "RGB", quality=95)
    before, content_type = multipart_body(("authorizer_appid", authorizer.appid), ("fit", "true"), ("media", data))
    after, _ = multipart_body(("authorizer_appid", authorizer.appid), ("media", data), ("fit", "true"))

    accepted, _ = send_counted(api_client, before, content_type)
    refused, consumed = send_counted(api_client, after, content_type)

    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["fitted"] is True
    # Sent after the image, `fit` comes too late to raise the limit: the read stopped at 1 MiB.
    assert_refused(refused, 413, "image_too_large")
    assert "before the 'media' part" in refused.json()["detail"]
    assert consumed <= MAX_UPLOAD_BYTES + 2 * 64 * 1024


def test_fit_limit_is_a_setting_and_a_larger_declared_body_is_not_read(api_client, authorizer, settings):
    settings.UPLOAD_FIT_MAX_BYTES = 2 * MAX_UPLOAD_BYTES
    over = png_padded_to(2 * MAX_UPLOAD_BYTES + 1)
    body, content_type = multipart_body(("authorizer_appid", authorizer.appid), ("media", over))
    huge, _ = multipart_body(("authorizer_appid", authorizer.appid), ("media", png_padded_to(3 * MAX_UPLOAD_BYTES)))

    streamed, _ = send_counted(api_client, body, content_type, query="fit=true")
    declared, read_declared = send_counted(api_client, huge, content_type, query="fit=true")

    assert_refused(streamed, 413, "image_too_large")
    assert "2,097,152" in streamed.json()["detail"]
    assert_refused(declared, 413, "image_too_large")
    assert read_declared == 0


@pytest.mark.parametrize(("query", "form_fit"), [
    ("fit=banana", None), ("fit=true&fit=false", None), ("fit=true", "false"), ("fit=0", "1"),
])
def test_an_invalid_or_contradicting_fit_is_refused(api_client, authorizer, query, form_fit):
    fields = [("authorizer_appid", authorizer.appid)] + ([("fit", form_fit)] if form_fit else [])
    body, content_type = multipart_body(*fields, ("media", image_bytes()))

    response, consumed = send_counted(api_client, body, content_type, query=query)

    assert_refused(response, 400, "invalid")
    if form_fit is None:
        assert consumed == 0  # refused before the body is read
    assert not Upload.objects.exists()


def test_fit_true_in_the_query_and_in_the_form_agree(api_client, authorizer):
    data = noise_bytes("JPEG", (1500, 1500), "RGB", quality=95)

    response = api_client.post(URL + "?fit=TRUE", {"fit": "1", "media": media_file(data, "a.jpg", "image/jpeg"),
                                                   "authorizer_appid": authorizer.appid}, format="multipart")

    assert response.status_code == 202, response.content
    assert response.json()["fitted"] is True


# -- the authorizer -----------------------------------------------------------------------------------------


def test_unknown_authorizer_gets_the_same_answer_whether_it_exists_elsewhere_or_not(
    api_client, make_tenant, make_authorizer
):
    other = make_authorizer(make_tenant("globex"))

    someone_elses = post(api_client, image_bytes(), other.appid)
    nonexistent = post(api_client, image_bytes(), "wx00000000000000ff")

    assert_refused(someone_elses, 400, "unknown_authorizer")
    assert_refused(nonexistent, 400, "unknown_authorizer")
    assert someone_elses.json() == nonexistent.json()
    assert not Upload.objects.exists()


# -- idempotency --------------------------------------------------------------------------------------------


def test_same_idempotency_key_and_request_returns_the_same_upload_and_creates_nothing(api_client, authorizer):
    data = image_bytes()
    key = {"Idempotency-Key": "order-1234"}

    first = post(api_client, data, authorizer.appid, headers=key)
    again = post(api_client, data, authorizer.appid, headers=key, name="renamed.png")

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Upload.objects.count() == 1
    assert UploadBlob.objects.count() == 1


def test_same_idempotency_key_with_a_different_request_is_a_conflict(api_client, make_authorizer, tenant):
    first_account, second_account = make_authorizer(tenant), make_authorizer(tenant)
    key = {"Idempotency-Key": "order-1234"}
    assert post(api_client, image_bytes(color=(1, 2, 3)), first_account.appid, headers=key).status_code == 202

    other_bytes = post(api_client, image_bytes(color=(3, 2, 1)), first_account.appid, headers=key)
    other_account = post(api_client, image_bytes(color=(1, 2, 3)), second_account.appid, headers=key)
    other_fit = post(api_client, image_bytes(color=(1, 2, 3)), first_account.appid, headers=key, fit="true")

    for response in (other_bytes, other_account, other_fit):
        assert_refused(response, 409, "idempotency_conflict")
    assert Upload.objects.count() == 1


@pytest.mark.postgres  # SQLite's shared in-memory test database refuses concurrent writers outright
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_idempotency_key_create_one_upload(api_client, authorizer):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    data = image_bytes()
    barrier = threading.Barrier(8)
    spans: list[tuple[float, float]] = []

    def send(_):
        try:
            barrier.wait(timeout=10)
            started = time.monotonic()
            response = post(api_client, data, authorizer.appid, headers={"Idempotency-Key": "burst"})
            spans.append((started, time.monotonic()))
            return response
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))

    # (they raced: every request was sent before the first one was answered)
    assert len(spans) == 8 and max(s for s, _ in spans) < min(e for _, e in spans), spans
    assert [r.status_code for r in responses] == [202] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert Upload.objects.count() == UploadBlob.objects.count() == 1


def test_replayed_request_costs_a_fixed_number_of_queries(api_client, authorizer, django_assert_num_queries):
    data = image_bytes()
    post(api_client, data, authorizer.appid, headers={"Idempotency-Key": "k"})

    with django_assert_num_queries(2):  # the API key, the earlier upload with its authorizer
        again = post(api_client, data, authorizer.appid, headers={"Idempotency-Key": "k"})

    assert again.status_code == 202


def test_idempotency_keys_are_per_tenant(api_client, authorizer, make_tenant, make_api_client, make_authorizer):
    globex = make_tenant("globex")
    globex_client, globex_account = make_api_client(globex), make_authorizer(globex)
    key = {"Idempotency-Key": "same-key"}

    ours = post(api_client, image_bytes(), authorizer.appid, headers=key)
    theirs = post(globex_client, image_bytes(), globex_account.appid, headers=key)

    assert ours.status_code == theirs.status_code == 202
    assert ours.json()["id"] != theirs.json()["id"]


# -- fit ----------------------------------------------------------------------------------------------------


def test_fit_recompresses_an_oversized_jpeg_applies_orientation_and_strips_metadata(api_client, authorizer):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010F] = "SecretCameraMaker"
    data = noise_bytes("JPEG", (1600, 1000), "RGB", quality=95, exif=exif.tobytes(), comment=b"gps: secret place")
    assert len(data) > MAX_UPLOAD_BYTES

    response = post(api_client, data, authorizer.appid, name="big.jpg", content_type="image/jpeg", fit="true")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["fitted"] is True
    assert body["original_size"] == len(data)
    assert body["size"] <= MAX_UPLOAD_BYTES
    stored = bytes(UploadBlob.objects.get(upload_id=body["id"]).data)
    assert len(stored) == body["size"]
    assert body["sha256"] == hashlib.sha256(stored).hexdigest()
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG"
    assert image.height > image.width  # landscape pixels, portrait display: orientation applied
    assert (body["width"], body["height"]) == image.size
    assert not image.getexif()
    assert "comment" not in image.info
    assert b"Secret" not in stored and b"secret" not in stored


def test_fit_keeps_a_png_a_png_with_its_transparency(api_client, authorizer):
    data = rgba_with_alpha_gradient()
    assert len(data) > MAX_UPLOAD_BYTES

    response = post(api_client, data, authorizer.appid, fit="true")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["content_type"] == "image/png"
    assert body["size"] <= MAX_UPLOAD_BYTES < body["original_size"] == len(data)
    image = Image.open(io.BytesIO(bytes(UploadBlob.objects.get(upload_id=body["id"]).data)))
    assert image.format == "PNG"
    alpha_min, alpha_max = image.convert("RGBA").getchannel("A").getextrema()
    assert alpha_min < 32 and alpha_max > 223


def test_fit_strips_png_text_chunks(api_client, authorizer):
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Secret Person")
    data = noise_bytes("PNG", (800, 800), "RGB", pnginfo=info)

    response = post(api_client, data, authorizer.appid, fit="true")

    assert response.status_code == 202, response.content
    stored = bytes(UploadBlob.objects.get(upload_id=response.json()["id"]).data)
    assert b"Secret Person" not in stored


def test_fit_leaves_an_image_that_already_fits_untouched(api_client, authorizer):
    data = image_bytes("JPEG")

    body = post(api_client, data, authorizer.appid, fit="true").json()

    assert body["fitted"] is False
    assert body["size"] == body["original_size"] == len(data)


# -- never a 5xx --------------------------------------------------------------------------------------------


def test_bad_requests_are_4xx_json_never_5xx(api_client, authorizer):
    png = image_bytes()
    cases = {
        "no authorizer_appid": lambda: post(api_client, png, None),
        "blank authorizer_appid": lambda: post(api_client, png, "   "),
        "fit=banana": lambda: post(api_client, png, authorizer.appid, fit="banana"),
        "json body": lambda: api_client.post(URL, {"authorizer_appid": authorizer.appid}, format="json"),
        "plain text body": lambda: api_client.generic("POST", URL, b"hello", content_type="text/plain"),
        "multipart without boundary": lambda: api_client.generic(
            "POST", URL, b"garbage", content_type="multipart/form-data"),
        "broken multipart": lambda: api_client.generic(
            "POST", URL, b"--b\r\nContent-Disposition: form-data; name=\"media\"; filename=\"a.png\"\r\n\r\n\x89PNG",
            content_type="multipart/form-data; boundary=b"),
        "two media files": lambda: api_client.post(URL, {
            "media": [media_file(png, "a.png"), media_file(image_bytes("JPEG"), "b.jpg", "image/jpeg")],
            "authorizer_appid": authorizer.appid}, format="multipart"),
        "media as a text field": lambda: api_client.post(
            URL, {"media": "not a file", "authorizer_appid": authorizer.appid}, format="multipart"),
        "huge appid": lambda: post(api_client, png, "wx" * 5000),
        "non-ascii appid": lambda: post(api_client, png, "wx测试"),
        "NUL in appid": lambda: post(api_client, png, "wx\x00"),  # PostgreSQL refuses NUL in a query
        "long idempotency key": lambda: post(api_client, png, authorizer.appid, headers={"Idempotency-Key": "k" * 300}),
        "empty file named jpg": lambda: post(api_client, b"", authorizer.appid, name="a.jpg"),
        "200 files": lambda: api_client.post(URL, {
            "other": [media_file(b"x", f"{i}.png") for i in range(200)], "authorizer_appid": authorizer.appid,
        }, format="multipart"),
        "2000 fields": lambda: api_client.post(URL, {
            **{f"f{i}": "x" for i in range(2000)}, "media": media_file(png), "authorizer_appid": authorizer.appid,
        }, format="multipart"),
        "3 MB text field": lambda: post(api_client, png, authorizer.appid, note="x" * (3 * 1024 * 1024)),
    }
    expected = {  # (status, code) of each refusal
        "no authorizer_appid": (400, "missing_authorizer_appid"),
        "blank authorizer_appid": (400, "missing_authorizer_appid"),
        "fit=banana": (400, "invalid"),
        "json body": (415, "unsupported_media_type"),
        "plain text body": (415, "unsupported_media_type"),
        "multipart without boundary": (400, "parse_error"),
        "broken multipart": (400, "missing_media"),
        "two media files": (400, "multiple_media"),
        "media as a text field": (400, "missing_media"),
        "huge appid": (400, "unknown_authorizer"),
        "non-ascii appid": (400, "unknown_authorizer"),
        "NUL in appid": (400, "unknown_authorizer"),
        "long idempotency key": (400, "invalid_idempotency_key"),
        "empty file named jpg": (400, "empty_file"),
        "200 files": (400, "too_many_fields"),
        "2000 fields": (400, "too_many_fields"),
        "3 MB text field": (413, "image_too_large"),
    }
    assert set(expected) == set(cases)
    for name, send in cases.items():
        response = send()
        body = response.json()
        assert (response.status_code, body.get("code")) == expected[name], (name, response.status_code, body)
        assert set(body) >= {"code", "detail"}, (name, body)
    assert not Upload.objects.exists()


def test_fit_input_over_its_own_limit_is_refused(api_client, authorizer):
    from uploads.images import fit_input_limit

    data = png_padded_to(fit_input_limit() + 1)

    assert_refused(post(api_client, data, authorizer.appid, fit="true"), 413, "image_too_large")


def test_requests_are_throttled_per_tenant_with_a_json_429(
    api_client, authorizer, make_tenant, make_api_client, monkeypatch
):
    from tenants.auth import TenantRateThrottle

    monkeypatch.setattr(TenantRateThrottle, "THROTTLE_RATES", {"tenant": "3/min"})
    second_key_same_tenant = make_api_client(authorizer.tenant)
    other_tenant = make_api_client(make_tenant("globex"))

    statuses = [c.get(URL).status_code for c in (api_client, api_client, second_key_same_tenant)]
    limited = api_client.get(URL)

    assert statuses == [200, 200, 200]
    assert_refused(limited, 429, "throttled")
    assert int(limited["Retry-After"]) > 0
    assert other_tenant.get(URL).status_code == 200


def test_two_media_parts_are_refused_rather_than_one_picked(api_client, authorizer):
    response = api_client.post(URL, {
        "media": [media_file(image_bytes(), "a.png"), media_file(image_bytes("JPEG"), "b.jpg", "image/jpeg")],
        "authorizer_appid": authorizer.appid,
    }, format="multipart")

    assert_refused(response, 400, "multiple_media")


def test_missing_authorizer_appid_says_so(api_client, authorizer):
    response = post(api_client, image_bytes(), None)

    assert_refused(response, 400, "missing_authorizer_appid")


# -- reading ------------------------------------------------------------------------------------------------


def test_list_is_newest_first_in_drf_page_shape(api_client, authorizer, bulk_uploads):
    rows = bulk_uploads(authorizer, 53)

    page1 = api_client.get(URL)
    page2 = api_client.get(page1.json()["next"])

    assert page1.status_code == 200
    body = page1.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 53 and body["previous"] is None
    ids = [r["id"] for r in body["results"]] + [r["id"] for r in page2.json()["results"]]
    assert ids == [str(r.pk) for r in reversed(rows)]
    assert page2.json()["next"] is None


def test_list_filters_by_status_and_authorizer(api_client, tenant, make_authorizer, bulk_uploads):
    first, second = make_authorizer(tenant), make_authorizer(tenant)
    bulk_uploads(first, 3, status=Upload.Status.SUCCEEDED)
    bulk_uploads(first, 2, status=Upload.Status.FAILED)
    bulk_uploads(second, 4, status=Upload.Status.FAILED)

    failed = api_client.get(URL, {"status": "failed"}).json()
    of_first = api_client.get(URL, {"authorizer_appid": first.appid}).json()
    both = api_client.get(URL, {"authorizer_appid": second.appid, "status": "failed"}).json()
    none = api_client.get(URL, {"authorizer_appid": "wxnothere"}).json()

    assert failed["count"] == 6 and {r["status"] for r in failed["results"]} == {"failed"}
    assert of_first["count"] == 5 and {r["authorizer_appid"] for r in of_first["results"]} == {first.appid}
    assert both["count"] == 4
    assert none["count"] == 0


def test_unknown_status_filter_is_a_400_with_a_code(api_client, authorizer):
    assert_refused(api_client.get(URL, {"status": "exploded"}), 400, "invalid_status")


def test_detail_has_every_contract_field(api_client, authorizer):
    data = image_bytes("JPEG")
    created = post(api_client, data, authorizer.appid, name="a.jpg", content_type="image/jpeg").json()

    response = api_client.get(f"{URL}{created['id']}/")

    assert response.status_code == 200
    body = response.json()
    assert CONTRACT_FIELDS <= set(body)
    assert body["id"] == created["id"]
    assert body["status"] == "queued"
    assert body["authorizer_appid"] == authorizer.appid
    assert body["url"] == "" and body["errcode"] is None and body["errmsg"] == ""
    assert set(body["permission_check"]) == {"required_any_of", "granted", "passed"}
    assert body["attempts"] == 0
    assert body["size"] == len(data) and body["content_type"] == "image/jpeg"
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["created_at"] and body["finished_at"] is None


def test_another_tenants_upload_is_404_and_lists_are_isolated(
    api_client, authorizer, make_tenant, make_api_client, make_authorizer, bulk_uploads
):
    globex = make_tenant("globex")
    globex_client = make_api_client(globex)
    (theirs,) = bulk_uploads(make_authorizer(globex), 1)
    ours = bulk_uploads(authorizer, 2)

    peek = api_client.get(f"{URL}{theirs.pk}/")
    missing = api_client.get(f"{URL}00000000-0000-0000-0000-000000000000/")

    assert_refused(peek, 404, "not_found")
    assert peek.json() == missing.json()
    assert {r["id"] for r in api_client.get(URL).json()["results"]} == {str(u.pk) for u in ours}
    assert [r["id"] for r in globex_client.get(URL).json()["results"]] == [str(theirs.pk)]
    # Filtering by someone else's appid reveals nothing either.
    assert api_client.get(URL, {"authorizer_appid": theirs.authorizer.appid}).json()["count"] == 0


def test_malformed_upload_id_is_a_json_404(api_client, authorizer):
    assert_refused(api_client.get(f"{URL}not-a-uuid/"), 404, "not_found")


@pytest.mark.parametrize("credentials", [None, "Api-Key nope.nope", "Api-Key", "Bearer abc"])
def test_without_a_valid_api_key_it_is_401_json(db, credentials):
    from rest_framework.test import APIClient

    client = APIClient()
    if credentials:
        client.credentials(HTTP_AUTHORIZATION=credentials)

    for response in (client.get(URL), client.post(URL, {}, format="multipart")):
        assert response.status_code == 401, response.content
        assert response.json()["code"] in {"not_authenticated", "authentication_failed"}
        assert response["WWW-Authenticate"] == "Api-Key"


def test_openapi_documents_the_idempotency_header_and_error_codes(client, db):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    post_op = schema["paths"]["/api/v1/uploads/"]["post"]
    headers = [p for p in post_op["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in headers] == ["Idempotency-Key"]
    for code in ("missing_media", "empty_file", "invalid_file_type", "image_too_large", "unknown_authorizer",
                 "idempotency_conflict", "image_dimensions_too_large"):
        assert code in post_op["description"]
    assert {"202", "400", "409", "413"} <= set(post_op["responses"])
    assert "multipart/form-data" in post_op["requestBody"]["content"]
    detail = schema["paths"]["/api/v1/uploads/{upload_id}/"]["get"]
    assert {"200", "404"} <= set(detail["responses"])
