from django.apps import AppConfig


class ComponentConfig(AppConfig):
    """The component's own state: verify tickets, the component access token, authorization events.

    The label stays `openplatform` (the app's name before it moved here), so existing databases keep
    their tables, migration history and permissions.
    """

    name = "openplatform.component"
    label = "openplatform"
    verbose_name = "WeChat Open Platform"
    default_auto_field = "django.db.models.BigAutoField"
