"""Merchant REST API for uploads: views validate with a serializer, call a service, serialize the result.

Refusals are the typed errors of uploads.errors; the API's exception handler renders them.
"""

from __future__ import annotations

import uuid

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from openplatform.core.api import InvalidPage, RefusingSerializer, is_clean_text
from openplatform.core.api_schema import refusal_responses, refusal_table
from openplatform.wechat.errors import without_addresses
from uploads.body import UploadFormParser, UploadMultiPartParser, query_fit, refuse_declared_length, too_large
from uploads.errors import (
    EmptyFile,
    IdempotencyConflict,
    ImageDimensionsTooLarge,
    ImageTooLarge,
    InvalidAuthorizerFilter,
    InvalidFileType,
    InvalidFit,
    InvalidIdempotencyKey,
    InvalidStatusFilter,
    MissingAuthorizerAppid,
    MissingMedia,
    MultipleMedia,
    UnknownAuthorizer,
    UploadNotFound,
)
from uploads.images import fit_input_limit
from uploads.models import Upload
from uploads.representation import json_bytes, upload_json
from uploads.selectors import upload_get, upload_list
from uploads.services.accept import upload_create

MAX_IDEMPOTENCY_KEY = 255
MAX_APPID = 64  # Authorizer.appid


class PermissionCheckSerializer(serializers.Serializer):
    required_any_of = serializers.ListField(child=serializers.IntegerField())
    granted = serializers.ListField(child=serializers.IntegerField())
    passed = serializers.BooleanField(allow_null=True)


class TenantErrmsgField(serializers.CharField):
    """WeChat's errmsg as a tenant may read it: without the IP addresses WeChat names (our servers', in
    40164 and 61004). The full text stays on the record and its attempts, for operators (the admin)."""

    def to_representation(self, value):
        return without_addresses(super().to_representation(value))


class UploadSerializer(serializers.ModelSerializer):
    """An upload as its tenant sees it, in the API and in webhooks."""

    authorizer_appid = serializers.CharField(source="authorizer.appid")
    permission_check = PermissionCheckSerializer()
    reused_from = serializers.UUIDField(
        source="reused_from_id", allow_null=True,
        help_text="Set when these bytes had already succeeded for this account: the earlier upload whose "
        "`url` this one reuses (no WeChat call was made).")
    errmsg = TenantErrmsgField(read_only=True, help_text=(
        "Why it failed or was rejected: WeChat's errcode and errmsg (server addresses removed) and their meaning."
    ))

    def to_representation(self, instance: Upload) -> dict:
        # The same JSON as the fields above describe (tests/test_upload_cost.py holds them equal),
        # built by hand: lists, details, the 202 and webhook events all answer with it.
        return upload_json(instance)

    class Meta:
        model = Upload
        fields = [
            "id", "status", "authorizer_appid", "url", "errcode", "errmsg", "permission_check", "attempts",
            "size", "original_size", "fitted", "content_type", "width", "height", "sha256",
            "created_at", "started_at", "finished_at", "reused_from",
        ]
        read_only_fields = fields


class FitField(serializers.BooleanField):
    """true, false, 1 or 0 in any case (empty is false): a typo such as `fit=ture` is refused, not read as false."""

    TRUE_VALUES = {"true", "1"}
    FALSE_VALUES = {"false", "0"}

    def to_internal_value(self, data):
        return super().to_internal_value(str(data).lower())


class UploadCreateSerializer(RefusingSerializer):
    """An image for one of your accounts; each refusal is a typed error with its own code."""

    media = serializers.FileField(
        allow_empty_file=True,  # `empty_file` is the image check's, like every other verdict on the bytes
        help_text="The image: a real JPEG or PNG, at most 1,048,576 bytes (with fit=true, UPLOAD_FIT_MAX_BYTES: "
        "10,485,760 by default).",
    )
    authorizer_appid = serializers.CharField(max_length=64, help_text="One of your authorized accounts.")
    fit = FitField(
        required=False, default=False,
        help_text="Recompress or downscale a valid JPEG/PNG over 1 MB until it fits (PNG keeps transparency; "
        "orientation is applied and metadata stripped). The record keeps both sizes. For an image over 1 MB, "
        "send it in the query string (?fit=true) or before the media part: the limit is set before the image "
        "is read.",
    )
    dedupe = serializers.BooleanField(
        required=False, default=True,
        help_text="If these bytes (after `fit`) already succeeded for this account within the dedupe window "
        "(30 days by default), the upload succeeds at once with that `url` and no WeChat call (`reused_from` "
        "names the earlier upload). `false` forces a fresh upload. Also accepted as a query parameter.",
    )

    refusals = {
        ("media", "required"): MissingMedia,
        ("media", "invalid"): MissingMedia,  # a text part named `media`
        ("media", "no_name"): MissingMedia,
        ("authorizer_appid", "required"): MissingAuthorizerAppid,
        ("authorizer_appid", "blank"): MissingAuthorizerAppid,
        # No account has such an appid: the same answer as for any other appid that is not yours.
        ("authorizer_appid", "max_length"): UnknownAuthorizer,
        ("authorizer_appid", "invalid"): UnknownAuthorizer,
        ("authorizer_appid", "null_characters_not_allowed"): UnknownAuthorizer,
        ("authorizer_appid", "surrogate_characters_not_allowed"): UnknownAuthorizer,
        ("fit", "invalid"): InvalidFit,
    }

    def validate_media(self, media: UploadedFile) -> UploadedFile:
        parts = self.initial_data.getlist("media") if hasattr(self.initial_data, "getlist") else [media]
        if sum(isinstance(part, UploadedFile) for part in parts) > 1:
            raise MultipleMedia()  # rather than silently picking one of them
        if media.size > fit_input_limit():  # (uploads/body.py stops reading long before)
            raise too_large(True)
        return media

    def validate(self, attrs: dict) -> dict:
        request = self.context["request"]
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        # printable ASCII: a NUL would reach PostgreSQL, a lone surrogate could not be encoded for it
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY or not (idempotency_key.isascii() and idempotency_key.isprintable()):
            raise InvalidIdempotencyKey()
        in_query = query_fit(request)
        if in_query is not None:
            if "fit" in self.initial_data and attrs["fit"] != in_query:
                raise InvalidFit("fit is given twice, with different values.")
            attrs["fit"] = in_query
        if "dedupe" not in self.initial_data and "dedupe" in request.query_params:  # `?dedupe=false` too
            attrs["dedupe"] = self.fields["dedupe"].run_validation(request.query_params["dedupe"])
        return {**attrs, "idempotency_key": idempotency_key}


#: Every refusal of POST /api/v1/uploads/, roughly in the order the request is checked.
UPLOAD_CREATE_REFUSALS = (
    MissingMedia, MultipleMedia, MissingAuthorizerAppid, InvalidFit, InvalidIdempotencyKey,
    EmptyFile, InvalidFileType, ImageDimensionsTooLarge, ImageTooLarge, UnknownAuthorizer, IdempotencyConflict,
)


class UploadListCreateApi(ListAPIView):
    serializer_class = UploadSerializer
    # The body is read with a cap that holds while it streams (uploads/body.py).
    parser_classes = [UploadMultiPartParser, UploadFormParser]

    def get_queryset(self):
        status_filter = self.request.query_params.get("status") or None
        if status_filter and status_filter not in Upload.Status.values:
            raise InvalidStatusFilter(f"status must be one of {', '.join(Upload.Status.values)}")
        # Checked before the database sees it (PostgreSQL refuses NUL); an appid that could exist but
        # is not yours simply lists nothing.
        appid = self.request.query_params.get("authorizer_appid") or None
        if appid is not None and not is_clean_text(appid, max_length=MAX_APPID):
            raise InvalidAuthorizerFilter()
        return upload_list(tenant=self.request.user.tenant, status=status_filter, authorizer_appid=appid)

    @extend_schema(
        summary="List your uploads, newest first",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=Upload.Status.values),
            OpenApiParameter("authorizer_appid", OpenApiTypes.STR),
        ],
        responses={
            200: UploadSerializer(many=True),
            **refusal_responses([InvalidStatusFilter, InvalidAuthorizerFilter, InvalidPage]),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Upload an image for one of your WeChat accounts",
        description="Accepted uploads are sent to WeChat's media/uploadimg by a worker; poll the upload "
        "until `status` is final (`succeeded`, `failed` or `rejected`), or receive the `upload.*` webhook. "
        "A repeat of bytes that already succeeded for the account is `succeeded` in this answer "
        "(see `dedupe`).\n\n" + refusal_table(UPLOAD_CREATE_REFUSALS),
        request={"multipart/form-data": UploadCreateSerializer},
        parameters=[
            OpenApiParameter("dedupe", OpenApiTypes.BOOL, required=False,
                             description="`false`: never reuse an earlier upload's URL (same as the form field)."),
            OpenApiParameter(
                "fit", OpenApiTypes.BOOL, OpenApiParameter.QUERY, required=False,
                description="The same as the `fit` form field; here the larger limit is known before the body "
                "is read. Given in both places, the two must agree.",
            ),
            OpenApiParameter(
                "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                description="Any unique string (max 255). Repeating a request with the same key returns the "
                "same upload and creates nothing; the same key with a different request is 409.",
            )
        ],
        responses={202: UploadSerializer, **refusal_responses(UPLOAD_CREATE_REFUSALS)},
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
        query_fit(request)  # an invalid ?fit= is refused before the body is read
        refuse_declared_length(request)
        incoming = UploadCreateSerializer(data=request.data, context={"request": request})
        incoming.is_valid(raise_exception=True)
        fields = incoming.validated_data
        accepted = upload_create(
            tenant=request.user.tenant,
            authorizer_appid=fields["authorizer_appid"],
            data=fields["media"].read(),
            fit=fields["fit"],
            idempotency_key=fields["idempotency_key"],
            api_key=request.user.api_key,
            dedupe=fields["dedupe"],
        )
        # Built by hand (uploads/representation.py): the same JSON as UploadSerializer, at a fraction of its cost.
        response = HttpResponse(json_bytes(upload_json(accepted.upload)), status=status.HTTP_202_ACCEPTED,
                                content_type="application/json")
        response["Location"] = f"/api/v1/uploads/{accepted.upload.pk}/"
        if accepted.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class UploadDetailApi(APIView):
    @extend_schema(
        summary="One upload",
        parameters=[OpenApiParameter("upload_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: UploadSerializer, **refusal_responses([UploadNotFound])},
    )
    def get(self, request: Request, upload_id: str) -> Response:
        # The URL takes any string so that a malformed id is this JSON 404, not Django's HTML one.
        try:
            pk = uuid.UUID(upload_id)
        except ValueError:
            pk = None
        upload = upload_get(tenant=request.user.tenant, upload_id=pk) if pk else None
        if upload is None:  # another tenant's upload is indistinguishable from a missing one
            raise UploadNotFound()
        return Response(UploadSerializer(upload).data)
