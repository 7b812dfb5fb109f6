"""Refusals of the uploads app: each class carries the stable `code` and HTTP `status` the API answers with.

The docstring's first line says when (the OpenAPI tables are built from it); `default_detail` is what the
client reads.
"""

from __future__ import annotations

from openplatform.core.api import ApiError


class UploadRefused(ApiError):
    """The upload request is refused."""

    code = "upload_refused"


# -- the request ---------------------------------------------------------------------------------------


class MissingMedia(UploadRefused):
    """No `media` part."""

    code = "missing_media"
    default_detail = "Send the image as the multipart part named 'media'."


class MultipleMedia(UploadRefused):
    """More than one `media` part."""

    code = "multiple_media"
    default_detail = "Send exactly one file in the part named 'media'."


class MissingAuthorizerAppid(UploadRefused):
    """No `authorizer_appid`."""

    code = "missing_authorizer_appid"
    default_detail = "Name the account to upload for in 'authorizer_appid'."


class InvalidFit(UploadRefused):
    """`fit` is not true, false, 1 or 0."""

    code = "invalid"
    default_detail = "fit must be true or false"


class InvalidIdempotencyKey(UploadRefused):
    """`Idempotency-Key` is longer than 255 characters, or not printable ASCII."""

    code = "invalid_idempotency_key"
    default_detail = "Idempotency-Key is at most 255 printable ASCII characters."


class UnknownAuthorizer(UploadRefused):
    """The appid is not one of your authorized accounts."""

    code = "unknown_authorizer"
    # Same answer whether the appid exists under another tenant or not at all.
    default_detail = "No authorized WeChat account with this appid belongs to you."


class IdempotencyConflict(UploadRefused):
    """The same `Idempotency-Key` was used for a different request."""

    code = "idempotency_conflict"
    status = 409
    default_detail = "This Idempotency-Key was already used for a different request."


# -- the image (checked by content, never by name or declared type) ----------------------------------------


class ImageRejected(UploadRefused):
    """The bytes are not an image WeChat will take (or cannot be made to fit)."""

    code = "image_rejected"


class EmptyFile(ImageRejected):
    """`media` is empty."""

    code = "empty_file"
    default_detail = "The file is empty."


class InvalidFileType(ImageRejected):
    """Not a real, complete JPEG or PNG (checked by content, not by name)."""

    code = "invalid_file_type"
    default_detail = "The file is not a complete, valid JPEG or PNG image."


class ImageDimensionsTooLarge(ImageRejected):
    """More than 24 million pixels, or more than the decode memory budget (README "Limits")."""

    code = "image_dimensions_too_large"
    default_detail = "The image's dimensions are too large."


class ImageTooLarge(ImageRejected):
    """Over 1,048,576 bytes (without `fit=true`), or too large to be made to fit."""

    code = "image_too_large"
    status = 413
    default_detail = "The image is larger than the 1,048,576 bytes WeChat takes."


# -- reading and operating on uploads ---------------------------------------------------------------------


class InvalidStatusFilter(UploadRefused):
    """`status` is not one of the upload statuses."""

    code = "invalid_status"


class InvalidAuthorizerFilter(UploadRefused):
    """`authorizer_appid` cannot be an appid: over 64 characters, a control character, or bytes that are
    not UTF-8."""

    code = "invalid_authorizer_appid"
    default_detail = "authorizer_appid is not an appid."


class UploadNotFound(UploadRefused):
    """No such upload among yours."""

    code = "not_found"
    status = 404
    # Another tenant's upload is indistinguishable from a missing one.
    default_detail = "No such upload."


class UploadNotRetryable(UploadRefused):
    """Only a failed upload whose image bytes are still stored can be sent again."""

    code = "upload_not_retryable"
    status = 409
