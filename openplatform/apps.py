from django.apps import AppConfig


class OpenPlatformConfig(AppConfig):
    name = "openplatform"
    label = "openplatform"
    verbose_name = "WeChat Open Platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Prometheus observes the WeChat client's and token services' log records (openplatform/metrics.py);
        # the protocol layer itself stays free of Django and Prometheus.
        from openplatform.metrics import metrics_log_handler_install

        metrics_log_handler_install()
