import os

from django.core.wsgi import get_wsgi_application

from openplatform.core.garbage import freeze_startup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openplatform.settings")
application = get_wsgi_application()


def _load_views() -> None:
    """Import the URLconf and every view now rather than at the first request, so that freeze_startup
    covers them too."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (the property imports the URLconf)


_load_views()
freeze_startup()
