"""Rules of media/uploadimg and the quota endpoints (docs/wechat-protocol.md §9-§11).

Handlers run under the state's lock. The multipart body is parsed (and hashed) before the lock is taken;
``MediaPart`` is that parse, and ``media_errcode`` judges it without touching the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openplatform.wechat.permissions import can_upload_images

from .state import METERED_PATHS, AccessToken, ApiError, Call, SimulatorState

UPLOADIMG_PATH = "/cgi-bin/media/uploadimg"
MAX_IMAGE_BYTES = 1_048_576
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class MediaPart:
    """What the simulator saw of the upload; no bytes are kept, only their size, hash and magic."""

    present: bool  # a file part named "media" was sent
    part_names: tuple[str, ...]  # every file part's name, to show what a client sent instead
    filename: str | None = None
    content_type: str | None = None
    size: int = 0
    sha256: str | None = None
    head: bytes = b""
    rfc2231_filename: bool = False  # Content-Disposition used filename*=charset''... (RFC 2231)

    def record(self) -> dict[str, Any]:
        return {
            "part_name": "media" if self.present else (self.part_names[0] if self.part_names else None),
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


def media_errcode(media: MediaPart | None) -> int | None:
    """The payload errcode WeChat would answer, in WeChat's order, or None when the image is accepted."""
    # WeChat's multipart parser does not understand RFC 2231 filenames or non-ASCII names and then
    # finds no media at all (wechatpy issue #293).
    if media is None or not media.present or media.rfc2231_filename:
        return 41005
    if media.filename and not media.filename.isascii():
        return 41005
    if media.size == 0:
        return 44001
    if media.size > MAX_IMAGE_BYTES:
        return 40009
    if not (media.head.startswith(JPEG_MAGIC) or media.head.startswith(PNG_MAGIC)):
        return 40005
    # WeChat also keys on the extension: a real PNG named "media" (requests' default for BytesIO) fails.
    if not (media.filename or "").lower().endswith(IMAGE_EXTENSIONS):
        return 40005
    return None


def _permission_errcode(state: SimulatorState, token: AccessToken, path: str) -> int | None:
    """48001 when the account itself lacks the API; 61007 when its authorization lacks every set the
    API needs (the troubleshooting guide, docs/wechat-notes.md item 5). The account's own lack is checked
    first: no re-authorization can fix it."""
    if (token.owner, path) in state.lacking_apis:
        return 48001
    if token.kind == "direct":
        # No component involved: an account using its own secret that lacks the API has only itself.
        account = state.direct_accounts.get(token.owner)
        return None if account and can_upload_images(account.func_info) else 48001
    comp = state.components.get(token.component_appid or "")
    authorizer = comp.authorizers.get(token.owner) if comp else None
    granted = authorizer.func_info if comp and authorizer and not authorizer.revoked else []
    held = [s for s in granted if s not in comp.withheld_sets] if comp else []
    return None if can_upload_images(held) else 61007


def uploadimg(state: SimulatorState, call: Call) -> dict[str, Any]:
    call.token = state.check_token(call.query, kinds=("authorizer", "direct"))
    state.check_quota(call.token.owner, call.path)
    # Any one of the sets "1、8-9、11、18、37、100" is enough (§9).
    errcode = _permission_errcode(state, call.token, call.path) or media_errcode(call.media)
    if errcode is not None:
        raise ApiError(errcode)
    state.meter(call.token.owner, call.path)
    return {"url": f"http://mmbiz.qpic.cn/sim/{call.media.sha256[:32]}/0", "errcode": 0, "errmsg": "ok"}


def quota_get(state: SimulatorState, call: Call) -> dict[str, Any]:
    # The token decides whose quota is read: component token -> component, authorizer token -> merchant.
    call.token = state.check_token(call.query, kinds=("component", "authorizer", "direct"))
    cgi_path = call.body.get("cgi_path")
    if not isinstance(cgi_path, str) or not cgi_path:
        raise ApiError(47001)
    if cgi_path not in METERED_PATHS:
        raise ApiError(76021)
    return {"errcode": 0, "errmsg": "ok", "quota": state.quota(call.token.owner, cgi_path)}


def clear_quota(state: SimulatorState, call: Call) -> dict[str, Any]:
    call.token = state.check_token(call.query, kinds=("component", "authorizer", "direct"))
    appid = call.body.get("appid")
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    # The token must be the account's own: component token for the component, authorizer token for
    # the merchant (§11).
    if appid != call.token.owner:
        raise ApiError(40013)
    state.clear_quota(appid)
    return {"errcode": 0, "errmsg": "ok"}


def component_clear_quota_v2(state: SimulatorState, call: Call) -> dict[str, Any]:
    """The way out when api_component_token itself answers 45009: authenticated by the secret."""
    appid = call.body.get("component_appid")
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    comp = state.component(appid)
    secret = call.body.get("appsecret")
    if not isinstance(secret, str) or not secret:
        raise ApiError(41004)
    if secret != comp.secret:
        raise ApiError(40125)
    target = call.body.get("appid") or comp.appid
    if target != comp.appid:
        authorizer = comp.authorizers.get(target)
        if authorizer is None or authorizer.revoked:
            raise ApiError(61003)
    state.clear_quota(target)
    return {"errcode": 0, "errmsg": "ok"}
