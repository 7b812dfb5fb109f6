"""A lean multipart/form-data reader for uploadimg.

Why not werkzeug's form parser: it compiles regular expressions per boundary (so per request), which
made it most of the simulator's CPU time per upload in throughput benchmarks, and it turns a part
without a filename into text, losing its bytes. Here the body is split on the boundary with
``bytes.split`` and each part keeps its raw bytes and raw headers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from werkzeug.http import parse_options_header

from .media_api import MediaPart


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    content_disposition: str
    data: bytes


def parse_parts(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart body; an empty list when it is not multipart or is malformed."""
    mimetype, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if mimetype != "multipart/form-data" or not boundary:
        return []
    parts = []
    # Everything before the first delimiter is preamble; "--boundary--" closes the body.
    for section in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if section.startswith(b"--"):
            break
        head, sep, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        _kind, params = parse_options_header(disposition)
        if "name" not in params:
            continue
        parts.append(
            Part(
                name=params["name"],
                filename=params.get("filename"),
                content_type=headers.get("content-type"),
                content_disposition=disposition,
                # The CRLF before the next delimiter belongs to the delimiter, not to the data.
                data=data.removesuffix(b"\r\n"),
            )
        )
    return parts


def parse_media(content_type: str, body: bytes) -> MediaPart:
    """What WeChat's uploadimg would look at: the first part named ``media``."""
    parts = parse_parts(content_type, body)
    names = tuple(p.name for p in parts)
    media = next((p for p in parts if p.name == "media"), None)
    if media is None:
        return MediaPart(present=False, part_names=names)
    return MediaPart(
        present=True,
        part_names=names,
        filename=media.filename,
        content_type=media.content_type,
        size=len(media.data),
        sha256=hashlib.sha256(media.data).hexdigest(),
        head=media.data[:8],
        rfc2231_filename="filename*" in media.content_disposition,
    )
