from django.contrib.admin.apps import AdminConfig


class OperatorAdminConfig(AdminConfig):
    """django.contrib.admin, with the operator console's site (two-factor sign-in: admin_site.py)."""

    default_site = "openplatform.ops.admin_site.OperatorAdminSite"
