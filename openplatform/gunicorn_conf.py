"""gunicorn's own settings for the image and the Procfile: `gunicorn -c python:openplatform.gunicorn_conf ...`.

Only logging lives here: gunicorn's access and error logs go through the same redaction as the
application's (openplatform/logging.py). The access line carries the query string, and WeChat's
redirect back to `/wechat/component/authorized/` puts `auth_code` and our signed `state` there; the
Referer of that request is the authorization page's URL, with the `pre_auth_code` in it.
The access line's atoms are built from what its format names (openplatform/ops/access_log.py).
Command-line flags (bind, threads, timeouts) stay where they are.
"""

accesslog = "-"
logger_class = "openplatform.ops.access_log.AccessLogger"
errorlog = "-"

_REDACTED = {"()": "openplatform.logging.RedactingFormatter"}

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "openplatform.logging.RedactSecretsFilter"}},
    "formatters": {
        "access": {**_REDACTED, "format": "%(message)s"},
        "error": {**_REDACTED, "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"},
    },
    "handlers": {
        "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "access",
                   "filters": ["redact"]},
        "error": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "error",
                  "filters": ["redact"]},
    },
    "loggers": {
        "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False, "filters": ["redact"]},
        "gunicorn.error": {"handlers": ["error"], "level": "INFO", "propagate": False, "filters": ["redact"]},
    },
    "root": {"handlers": ["error"], "level": "INFO"},
}
