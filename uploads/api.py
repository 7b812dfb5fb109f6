"""Merchant REST API for uploads: thin views over services and selectors."""

from __future__ import annotations

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from openplatform.core.api import ApiError
from tenants.api import ErrorSerializer
from uploads.errors import UploadRefused
from uploads.images import MAX_FIT_INPUT_BYTES
from uploads.models import Upload
from uploads.selectors import upload_get, upload_list
from uploads.services.accept import upload_create

#: The multipart envelope around a file adds far less than this.
ENVELOPE_ALLOWANCE = 64 * 1024
MAX_IDEMPOTENCY_KEY = 255


class PermissionCheckSerializer(serializers.Serializer):
    required_any_of = serializers.ListField(child=serializers.IntegerField())
    granted = serializers.ListField(child=serializers.IntegerField())
    passed = serializers.BooleanField(allow_null=True)


class UploadSerializer(serializers.ModelSerializer):
    authorizer_appid = serializers.CharField(source="authorizer.appid")
    permission_check = PermissionCheckSerializer()
    reused_from = serializers.UUIDField(
        source="reused_from_id", allow_null=True,
        help_text="Set when these bytes had already succeeded for this account: the earlier upload whose "
        "`url` this one reuses (no WeChat call was made).")

    class Meta:
        model = Upload
        fields = [
            "id", "status", "authorizer_appid", "url", "errcode", "errmsg", "permission_check", "attempts",
            "size", "original_size", "fitted", "content_type", "width", "height", "sha256",
            "created_at", "started_at", "finished_at", "reused_from",
        ]
        read_only_fields = fields


class UploadCreateSerializer(serializers.Serializer):
    media = serializers.FileField(help_text="The image: a real JPEG or PNG, at most 1,048,576 bytes.")
    authorizer_appid = serializers.CharField(max_length=64, help_text="One of your authorized accounts.")
    fit = serializers.BooleanField(
        required=False, default=False,
        help_text="Recompress or downscale a valid JPEG/PNG over 1 MB until it fits (PNG keeps transparency; "
        "orientation is applied and metadata stripped). The record keeps both sizes.",
    )
    dedupe = serializers.BooleanField(
        required=False, default=True,
        help_text="If these bytes (after `fit`) already succeeded for this account within the dedupe window "
        "(30 days by default), the upload succeeds at once with that `url` and no WeChat call (`reused_from` "
        "names the earlier upload). `false` forces a fresh upload. Also accepted as a query parameter.",
    )


_ERROR_CODES_DOC = """
Refusals are `{"code": "...", "detail": "..."}`:

| status | code | when |
|---|---|---|
| 400 | `missing_media` | no `media` part |
| 400 | `multiple_media` | more than one `media` part |
| 400 | `missing_authorizer_appid` | no `authorizer_appid` |
| 400 | `empty_file` | `media` is empty |
| 400 | `invalid_file_type` | not a real, complete JPEG or PNG (checked by content, not by name) |
| 400 | `image_dimensions_too_large` | more than 40 million pixels |
| 413 | `image_too_large` | over 1,048,576 bytes (without `fit=true`) |
| 400 | `unknown_authorizer` | the appid is not one of your authorized accounts |
| 400 | `invalid` | other malformed fields (see `errors`) |
| 409 | `idempotency_conflict` | the same `Idempotency-Key` was used for a different request |
| 401 | `authentication_failed` / `not_authenticated` | missing, invalid or revoked API key |
| 403 | `permission_denied` | the merchant account is disabled |
| 429 | `throttled` | too many requests |
"""


class UploadListCreateApi(ListAPIView):
    serializer_class = UploadSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        status_filter = self.request.query_params.get("status") or None
        if status_filter and status_filter not in Upload.Status.values:
            raise ApiError("invalid_status", f"status must be one of {', '.join(Upload.Status.values)}")
        return upload_list(
            tenant=self.request.user.tenant,
            status=status_filter,
            authorizer_appid=self.request.query_params.get("authorizer_appid") or None,
        )

    @extend_schema(
        summary="List your uploads, newest first",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=Upload.Status.values),
            OpenApiParameter("authorizer_appid", OpenApiTypes.STR),
        ],
        responses={200: UploadSerializer(many=True), 400: ErrorSerializer},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Upload an image for one of your WeChat accounts",
        description="Accepted uploads are sent to WeChat's media/uploadimg by a worker; poll the upload "
        "until `status` is final (`succeeded`, `failed` or `rejected`), or receive the `upload.*` webhook. "
        "A repeat of bytes that already succeeded for the account is `succeeded` in this answer "
        "(see `dedupe`).\n" + _ERROR_CODES_DOC,
        request={"multipart/form-data": UploadCreateSerializer},
        parameters=[
            OpenApiParameter("dedupe", OpenApiTypes.BOOL, required=False,
                             description="`false`: never reuse an earlier upload's URL (same as the form field)."),
            OpenApiParameter(
                "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                description="Any unique string (max 255). Repeating a request with the same key returns the "
                "same upload and creates nothing; the same key with a different request is 409.",
            )
        ],
        responses={
            202: UploadSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Bad input (see the table)."),
            409: OpenApiResponse(ErrorSerializer, description="`idempotency_conflict`"),
            413: OpenApiResponse(ErrorSerializer, description="`image_too_large`"),
        },
        examples=[
            OpenApiExample(
                "Accepted",
                response_only=True,
                status_codes=["202"],
                value={
                    "id": "7d6f2f9e-2a5b-4b44-9f4b-0f7c3b1f3f11", "status": "queued",
                    "authorizer_appid": "wx0123456789abcdef", "url": "", "errcode": None, "errmsg": "",
                    "permission_check": {"required_any_of": [], "granted": [], "passed": None},
                    "attempts": 0, "size": 48213, "original_size": 48213, "fitted": False,
                    "content_type": "image/png", "width": 640, "height": 480,
                    "sha256": "9f2c…", "created_at": "2026-11-25T10:00:00Z", "started_at": None, "finished_at": None,
                    "reused_from": None,
                },
            ),
            OpenApiExample("Too large", response_only=True, status_codes=["413"],
                           value={"code": "image_too_large", "detail": "The image is 2,000,000 bytes; the limit is 1,048,576 bytes."}),
        ],
    )
    def post(self, request: Request) -> Response:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > MAX_FIT_INPUT_BYTES + ENVELOPE_ALLOWANCE:
            # Refused before the body is read or parsed.
            raise ApiError("image_too_large", "The request body is far larger than the 1 MB image limit.",
                           status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        files = request.FILES.getlist("media")
        if not files:
            raise ApiError("missing_media", "Send the image as the multipart part named 'media'.")
        if len(files) > 1:  # refuse rather than silently pick one of them
            raise ApiError("multiple_media", "Send exactly one file in the part named 'media'.")
        media = files[0]
        authorizer_appid = str(request.data.get("authorizer_appid", "")).strip()
        if not authorizer_appid:
            raise ApiError("missing_authorizer_appid", "Name the account to upload for in 'authorizer_appid'.")
        fit_raw = str(request.data.get("fit", "false")).lower()
        if fit_raw not in ("true", "false", "1", "0", ""):
            raise ApiError("invalid", "fit must be true or false")
        dedupe_raw = str(request.data.get("dedupe", request.query_params.get("dedupe", "true"))).lower()
        if dedupe_raw not in ("true", "false", "1", "0", ""):
            raise ApiError("invalid", "dedupe must be true or false")
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ApiError("invalid_idempotency_key", "Idempotency-Key is at most 255 characters.")
        if media.size > MAX_FIT_INPUT_BYTES:
            raise ApiError("image_too_large", f"The image is {media.size:,} bytes; the limit is 1,048,576 bytes.",
                           status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        principal = request.user
        try:
            accepted = upload_create(
                tenant=principal.tenant,
                authorizer_appid=authorizer_appid[:64],
                data=media.read(),
                fit=fit_raw in ("true", "1"),
                idempotency_key=idempotency_key,
                api_key=principal.api_key,
                dedupe=dedupe_raw not in ("false", "0"),
            )
        except UploadRefused as exc:
            raise ApiError(exc.code, exc.detail, status_code=exc.status_code) from None
        headers = {"Location": f"/api/v1/uploads/{accepted.upload.pk}/"}
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(UploadSerializer(accepted.upload).data, status=status.HTTP_202_ACCEPTED, headers=headers)


class UploadDetailApi(APIView):
    @extend_schema(
        summary="One upload",
        parameters=[OpenApiParameter("upload_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: UploadSerializer, 404: ErrorSerializer},
    )
    def get(self, request: Request, upload_id: str) -> Response:
        # The URL takes any string so that a malformed id is this JSON 404, not Django's HTML one.
        try:
            pk = uuid.UUID(upload_id)
        except ValueError:
            pk = None
        upload = upload_get(tenant=request.user.tenant, upload_id=pk) if pk else None
        if upload is None:  # another tenant's upload is indistinguishable from a missing one
            raise ApiError("not_found", "No such upload.", status_code=status.HTTP_404_NOT_FOUND)
        return Response(UploadSerializer(upload).data)
