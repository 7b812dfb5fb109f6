"""Merchant REST API: the tenant's authorizers and self-service authorization links."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from openplatform.core.api import InvalidPage
from openplatform.core.api_schema import refusal_responses
from openplatform.wechat.errors import WeChatError
from openplatform.wechat.permissions import UPLOADIMG_REQUIRED_ANY_OF, permission_set_name
from tenants.auth import AuthorizationLinkThrottle
from tenants.errors import UnknownPermissionSet, WeChatUnavailable
from tenants.selectors import authorizer_list
from tenants.services.authorization import authorization_link_create


class PermissionSetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class AuthorizerSerializer(serializers.Serializer):
    appid = serializers.CharField()
    nick_name = serializers.CharField()
    account_type = serializers.CharField()
    status = serializers.CharField()
    permission_sets = serializers.SerializerMethodField()
    can_upload_images = serializers.BooleanField()
    authorized_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(PermissionSetSerializer(many=True))
    def get_permission_sets(self, obj) -> list[dict]:
        return [{"id": i, "name": permission_set_name(i)} for i in obj.func_info or []]


class AuthorizerListApi(ListAPIView):
    serializer_class = AuthorizerSerializer

    def get_queryset(self):
        return authorizer_list(tenant=self.request.user.tenant)

    @extend_schema(
        summary="List your authorized WeChat accounts",
        description=(
            "`can_upload_images` is true when the account is authorized and holds one of the permission "
            f"sets media/uploadimg needs: {', '.join(map(str, UPLOADIMG_REQUIRED_ANY_OF))}."
        ),
        responses={200: AuthorizerSerializer(many=True), **refusal_responses([InvalidPage])},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AuthorizationLinkApi(APIView):
    def get_throttles(self):
        # The tenant's request rate, and its own budget of links (each one asks WeChat for a code).
        return [*super().get_throttles(), AuthorizationLinkThrottle()]

    class InputSerializer(serializers.Serializer):
        category_id_list = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=10_000), required=False, max_length=64,
            help_text=(
                "Ask only for these permission sets (e.g. [11] for image uploads to an Official Account, "
                "[18] for a Mini Program); omitted: every set the platform has."
            ),
        )

    class OutputSerializer(serializers.Serializer):
        url = serializers.URLField()
        mobile_url = serializers.URLField()
        expires_at = serializers.DateTimeField()

    @extend_schema(
        summary="Create an authorization link",
        description=(
            "A fresh link for the merchant's WeChat account administrator: `url` for a desktop browser "
            "(scan the QR code), `mobile_url` to open inside WeChat. Single use; expires at `expires_at`. "
            "At most 20 links an hour per merchant unless the service provider set another rate; past it, "
            "429 `throttled` with `Retry-After`."
        ),
        request=InputSerializer,
        responses={201: OutputSerializer, **refusal_responses([UnknownPermissionSet, WeChatUnavailable])},
    )
    def post(self, request: Request) -> Response:
        given = self.InputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            link = authorization_link_create(
                tenant=request.user.tenant, category_id_list=given.validated_data.get("category_id_list", [])
            )
        except WeChatError as exc:
            raise WeChatUnavailable(f"Could not get a pre-authorization code from WeChat: {exc.describe()}") from exc
        data = self.OutputSerializer({"url": link.url, "mobile_url": link.mobile_url, "expires_at": link.expires_at}).data
        return Response(data, status=status.HTTP_201_CREATED)


__all__ = ["AuthorizerListApi", "AuthorizationLinkApi"]
