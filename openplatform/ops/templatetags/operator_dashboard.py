"""`{% operator_dashboard as dashboard %}` on the admin index (openplatform/ops/templates/admin/index.html)."""

from __future__ import annotations

from django import template

from openplatform.ops.dashboard import Dashboard, dashboard_get

register = template.Library()

#: The dashboard shows uploads and authorizers: only for staff who may see both in the admin.
REQUIRED_PERMISSIONS = ("uploads.view_upload", "tenants.view_authorizer")


@register.simple_tag(takes_context=True)
def operator_dashboard(context) -> Dashboard | None:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff or not user.has_perms(REQUIRED_PERMISSIONS):
        return None
    return dashboard_get()
