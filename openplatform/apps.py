from django.apps import AppConfig


class OpenPlatformConfig(AppConfig):
    name = "openplatform"
    label = "openplatform"
    verbose_name = "WeChat Open Platform"
    default_auto_field = "django.db.models.BigAutoField"
