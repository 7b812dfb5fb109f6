"""Reading the body of POST /api/v1/uploads/ with a cap that holds while it streams.

Without `fit`, no more than 1 MiB of image (plus the multipart envelope) is ever read into memory: the
image part is counted as it arrives and the request stops with 413 `image_too_large` at the first byte
over, whatever Content-Length said (or if it said nothing). With `fit=true` the limit is
UPLOAD_FIT_MAX_BYTES. The limit must be known before the image arrives: from `?fit=true` in the query
string, or from a `fit` form field sent before the `media` part (as browsers, curl -F and requests send
fields in order). docs/architecture.md §3.5.
"""

from __future__ import annotations

import io

from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import DataAndFiles, FormParser, MultiPartParser

from uploads.errors import ImageTooLarge, InvalidFit
from uploads.images import MAX_UPLOAD_BYTES, fit_input_limit

#: The multipart envelope around the image (part headers, boundaries, the other fields) takes far less.
ENVELOPE_ALLOWANCE = 64 * 1024

_TRUE, _FALSE = {"true", "1"}, {"false", "0", ""}


def parse_fit(value: str) -> bool:
    """true, false, 1 or 0 in any case (empty is false); anything else is refused, not read as false."""
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidFit()


def query_fit(request) -> bool | None:
    """`fit` from the query string: None when it is not there."""
    values = request.query_params.getlist("fit") if hasattr(request, "query_params") else request.GET.getlist("fit")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidFit("Give fit once.")
    return parse_fit(values[0])


def image_limit(fit: bool) -> int:
    return fit_input_limit() if fit else MAX_UPLOAD_BYTES


def too_large(fit: bool) -> ImageTooLarge:
    if fit:
        return ImageTooLarge(f"The image is over {fit_input_limit():,} bytes, the limit with fit=true.")
    return ImageTooLarge(
        f"The image is over {MAX_UPLOAD_BYTES:,} bytes. To have a larger image made to fit, send fit=true "
        "in the query string (?fit=true) or as a form field before the 'media' part."
    )


def refuse_declared_length(request) -> None:
    """A body declared larger than any request this API takes is refused before a byte of it is read."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    # Without ?fit the limit may still be raised by a `fit` form field: the stream cap decides then.
    if declared > fit_input_limit() + ENVELOPE_ALLOWANCE:
        raise too_large(bool(query_fit(request)))
    if query_fit(request) is False and declared > MAX_UPLOAD_BYTES + ENVELOPE_ALLOWANCE:
        raise too_large(False)


class CappedStream:
    """A read-only stream that refuses (413) once more than `cap` bytes have been read from it."""

    def __init__(self, stream, cap: int, refusal):
        self.stream = stream
        self.cap = cap
        self.refusal = refusal
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # everything, but in pieces, so the cap stops it early
            chunks = []
            while chunk := self.read(64 * 1024):
                chunks.append(chunk)
            return b"".join(chunks)
        data = self.stream.read(min(size, self.cap + 1 - self.consumed) or 1)
        self.consumed += len(data)
        if self.consumed > self.cap:
            raise self.refusal()
        return data


class ImageUploadHandler(FileUploadHandler):
    """Keeps file parts in memory and refuses (413) at the first byte past the limit in force.

    The limit counts every file part of the request together (a hundred 1 MiB parts are as refused as one
    large one). `fit` is the query string's, or a `fit` form field parsed before the file part.
    """

    def __init__(self, request, *, fit: bool | None, stream: CappedStream):
        super().__init__(request)
        self.query_fit = fit
        self.stream = stream
        self.parser: DjangoMultiPartParser | None = None
        self.received = 0
        self.fit = bool(fit)
        self.buffer: io.BytesIO | None = None

    def _fit_now(self) -> bool:
        if self.query_fit is not None:
            return self.query_fit
        fields = getattr(self.parser, "_post", None)  # the fields parsed so far, in body order
        values = fields.getlist("fit") if fields is not None else []
        try:
            return bool(values) and parse_fit(values[-1])
        except InvalidFit:
            return False  # the serializer refuses the value itself

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.fit = self._fit_now()
        limit = image_limit(self.fit)
        self.stream.cap = max(self.stream.cap, limit + ENVELOPE_ALLOWANCE)
        if content_length is not None and self.received + content_length > limit:
            raise too_large(self.fit)
        self.buffer = io.BytesIO()
        raise StopFutureHandlers()

    def receive_data_chunk(self, raw_data: bytes, start: int):
        self.received += len(raw_data)
        if self.received > image_limit(self.fit):
            raise too_large(self.fit)
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size: int):
        data = self.buffer.getvalue()  # one bytes object, shared by the BytesIO below and by .read()
        self.buffer = None
        return InMemoryUploadedFile(
            file=io.BytesIO(data), field_name=self.field_name, name=self.file_name, content_type=self.content_type,
            size=file_size, charset=self.charset, content_type_extra=self.content_type_extra,
        )


class UploadMultiPartParser(MultiPartParser):
    """DRF's multipart parser with the capped stream and ImageUploadHandler instead of Django's handlers."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        fit = query_fit(request)
        capped = CappedStream(stream, image_limit(bool(fit)) + ENVELOPE_ALLOWANCE, lambda: too_large(handler.fit))
        handler = ImageUploadHandler(request, fit=fit, stream=capped)
        meta = {**request.META, "CONTENT_TYPE": media_type}
        try:
            parser = DjangoMultiPartParser(meta, capped, [handler], parser_context.get("encoding") or "utf-8")
            handler.parser = parser
            data, files = parser.parse()
        except MultiPartParserError as exc:
            raise ParseError(f"Multipart form parse error - {exc}") from exc
        return DataAndFiles(data, files)


class UploadFormParser(FormParser):
    """An urlencoded body cannot carry the image: it is read only up to the envelope's size."""

    def parse(self, stream, media_type=None, parser_context=None):
        capped = CappedStream(stream, ENVELOPE_ALLOWANCE, lambda: too_large(False))
        return super().parse(capped, media_type, parser_context)
