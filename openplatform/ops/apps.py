from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


class OpsConfig(AppConfig):
    """The operator's pages at the project's top: dashboard, metrics, health, schedules."""

    name = "openplatform.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Prometheus observes the WeChat client's and token services' log records (openplatform/ops/metrics.py);
        # the protocol layer itself stays free of Django and Prometheus.
        from openplatform.ops.metrics import metrics_log_handler_install
        from openplatform.ops.schedules import schedules_install_after_migrate

        metrics_log_handler_install()
        # The scheduled jobs are written after every migrate. Django sends post_migrate once per app that
        # has a models module, which this app has not: listening for django-celery-beat's, the app whose
        # tables they are written to, runs the handler once per migrate.
        post_migrate.connect(
            schedules_install_after_migrate,
            sender=apps.get_app_config("django_celery_beat"),
            dispatch_uid="ops.schedules_install_after_migrate",
        )
