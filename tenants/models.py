"""Merchants (tenants), their API keys, and their authorized WeChat accounts (authorizers)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from openplatform.core.secrets import EncryptedSecretsMixin
from openplatform.wechat.permissions import can_upload_images


class Tenant(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class TenantAPIKey(AbstractAPIKey):
    """A merchant's API key, stored hashed (djangorestframework-api-key); the key is shown once."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"


class AuthorizerQuerySet(models.QuerySet):
    def authorized(self) -> AuthorizerQuerySet:
        return self.filter(status=self.model.Status.AUTHORIZED)

    def reauthorization_required(self) -> AuthorizerQuerySet:
        return self.filter(status=self.model.Status.REAUTHORIZATION_REQUIRED)

    def revoked(self) -> AuthorizerQuerySet:
        return self.filter(status=self.model.Status.REVOKED)


class Authorizer(EncryptedSecretsMixin, models.Model):
    """A merchant's Official Account or Mini Program that authorized our component (or gave us its secret)."""

    ENCRYPTED_FIELDS = ("access_token_ciphertext", "refresh_token_ciphertext", "app_secret_ciphertext")

    class Status(models.TextChoices):
        AUTHORIZED = "authorized", "Authorized"
        REAUTHORIZATION_REQUIRED = "reauthorization_required", "Re-authorization required"
        REVOKED = "revoked", "Revoked"

    class Mode(models.TextChoices):
        #: Tokens through our third-party platform (api_authorizer_token).
        COMPONENT = "component", "Third-party platform"
        #: The merchant gave us its own AppID/AppSecret; tokens from stable_token.
        DIRECT = "direct", "Direct (own AppSecret)"

    class AccountType(models.TextChoices):
        OFFICIAL_ACCOUNT = "official_account", "Official Account"
        MINI_PROGRAM = "mini_program", "Mini Program"
        UNKNOWN = "unknown", "Unknown"

    #: None until the authorization is bound to a merchant (an `authorized` event can arrive first).
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="authorizers")
    component_appid = models.CharField(max_length=64)
    appid = models.CharField(max_length=64)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.COMPONENT)
    account_type = models.CharField(max_length=20, choices=AccountType.choices, default=AccountType.UNKNOWN)
    nick_name = models.CharField(max_length=200, blank=True, default="")
    user_name = models.CharField(max_length=64, blank=True, default="")
    principal_name = models.CharField(max_length=200, blank=True, default="")
    #: Granted permission-set ids (funcscope_category ids), sorted.
    func_info = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.AUTHORIZED, db_index=True)

    access_token_ciphertext = models.TextField(blank=True, default="")
    access_token_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    #: Incremented on every new access token; uploads record it (never the token itself).
    token_generation = models.PositiveIntegerField(default=0)
    refresh_token_ciphertext = models.TextField(blank=True, default="")
    app_secret_ciphertext = models.TextField(blank=True, default="")
    token_refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_count = models.PositiveIntegerField(default=0)
    #: The token refresh lease (openplatform/core/tokens.py): who is asking WeChat for a new token, and
    #: until when others leave it to them. Empty/None: nobody.
    refresh_lease_owner = models.CharField(max_length=80, blank=True, default="")
    refresh_lease_until = models.DateTimeField(null=True, blank=True)

    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    authorized_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    #: CreateTime (WeChat's clock) of the last authorization event applied to this account: an older one
    #: arriving later (a redelivery out of order, a replay) never undoes it (tenants/events.py).
    last_event_created_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AuthorizerQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["component_appid", "appid"], name="authorizer_unique_per_component"),
        ]
        ordering = ["appid"]

    def __str__(self) -> str:
        return self.appid

    # Secrets: explicit setters and getters only.
    def set_access_token(self, raw: str | None) -> None:
        self._set_secret("access_token_ciphertext", raw)

    def get_access_token(self) -> str | None:
        return self._get_secret("access_token_ciphertext")

    def set_refresh_token(self, raw: str | None) -> None:
        self._set_secret("refresh_token_ciphertext", raw)

    def get_refresh_token(self) -> str | None:
        return self._get_secret("refresh_token_ciphertext")

    def set_app_secret(self, raw: str | None) -> None:
        self._set_secret("app_secret_ciphertext", raw)

    def get_app_secret(self) -> str | None:
        return self._get_secret("app_secret_ciphertext")

    def wipe_tokens(self) -> None:
        self.access_token_ciphertext = ""
        self.refresh_token_ciphertext = ""
        self.access_token_expires_at = None

    @property
    def can_upload_images(self) -> bool:
        return self.status == self.Status.AUTHORIZED and can_upload_images(self.func_info or [])

    @property
    def is_mini_program(self) -> bool:
        return self.account_type == self.AccountType.MINI_PROGRAM

    def token_seconds_left(self) -> float:
        if not self.access_token_ciphertext or self.access_token_expires_at is None:
            return 0.0
        return (self.access_token_expires_at - timezone.now()).total_seconds()


class AuthCodeExchange(models.Model):
    """Makes the auth_code exchange happen exactly once, whether the redirect or the event comes first.

    Keyed by the code's SHA-256 (the code itself is a credential and is not stored). A caller claims the
    row (`claimed_until`, `claim_token`) and commits before calling api_query_auth, so no row lock is held
    while WeChat answers; the result is written afterwards under a compare (docs/architecture.md §3.3).
    """

    code_sha256 = models.CharField(max_length=64, unique=True)
    authorizer = models.ForeignKey(Authorizer, null=True, blank=True, on_delete=models.SET_NULL)
    completed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    #: WeChat called the code dead (61009 invalid, 61010 expired): final, never sent to WeChat again.
    dead_errcode = models.IntegerField(null=True, blank=True)
    #: When the code dies: WeChat's `expires_in` (redirect) or AuthorizationCodeExpiredTime (event), at
    #: most an hour after it was first seen. Past it the code is never sent to WeChat and binds nothing.
    expires_at = models.DateTimeField(null=True, blank=True)
    #: A caller is asking WeChat until then (its claim); another caller waits for the result meanwhile.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"auth code {self.code_sha256[:12]}…"


class AuthorizationStateUse(models.Model):
    """An authorization link's `state` that has bound an account: the link is single use.

    Keyed by the state's SHA-256, with the code it bound (a reload of the same redirect still shows its
    page; another code with the same state is refused before WeChat is asked).
    """

    state_sha256 = models.CharField(max_length=64, unique=True)
    code_sha256 = models.CharField(max_length=64)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    authorizer = models.ForeignKey(Authorizer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    used_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"state {self.state_sha256[:12]}…"


class AuthorizerTransferRequest(EncryptedSecretsMixin, models.Model):
    """An account whose binding to one merchant is revoked was authorized again through another's link.

    Nothing is stored on the account for its old merchant; an operator decides (the admin's action moves
    it, docs/architecture.md §3.3). WeChat's answer to that authorization is kept here, encrypted, until
    then: the code it came from is single use, so the refresh token cannot be had from it again, and
    api_get_authorizer_info's copy is not guaranteed for every account (docs/wechat-protocol.md §8).
    Wiped when the request is decided.
    """

    ENCRYPTED_FIELDS = ("refresh_token_ciphertext",)

    class State(models.TextChoices):
        PENDING = "pending", "Transfer requested"
        TRANSFERRED = "transferred", "Moved"
        DECLINED = "declined", "Declined"
        #: The account changed meanwhile (its merchant authorized it again, another request was approved).
        SUPERSEDED = "superseded", "Superseded"

    authorizer = models.ForeignKey(Authorizer, on_delete=models.CASCADE, related_name="transfer_requests")
    appid = models.CharField(max_length=64)
    from_tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    to_tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    requested_at = models.DateTimeField(default=timezone.now)
    #: Permission sets granted by the authorization behind the request.
    func_info = models.JSONField(default=list, blank=True)
    refresh_token_ciphertext = models.TextField(blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True, default="")
    note = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["authorizer", "to_tenant"], condition=models.Q(state="pending"),
                name="one_pending_transfer_per_account_and_tenant",
            ),
        ]
        ordering = ["-requested_at"]
        verbose_name = "account transfer request"

    def __str__(self) -> str:
        return f"{self.appid}: {self.from_tenant} → {self.to_tenant} ({self.state})"

    def set_refresh_token(self, raw: str | None) -> None:
        self._set_secret("refresh_token_ciphertext", raw)

    def get_refresh_token(self) -> str | None:
        return self._get_secret("refresh_token_ciphertext")
