from django.apps import AppConfig


class OpsConfig(AppConfig):
    """The operator's pages at the project's top: dashboard, metrics, health, schedules."""

    name = "openplatform.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Prometheus observes the WeChat client's and token services' log records (openplatform/ops/metrics.py);
        # the protocol layer itself stays free of Django and Prometheus.
        from openplatform.ops.metrics import metrics_log_handler_install

        metrics_log_handler_install()
