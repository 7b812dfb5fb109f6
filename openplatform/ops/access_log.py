"""gunicorn's access line, built from the atoms its format names (`logger_class` in openplatform/gunicorn_conf.py).

gunicorn's own `Logger.atoms()` makes an entry for every request header, response header and WSGI
environ key (`{name}i`, `{name}o`, `{name}e`) on every request, whether the format uses them or not,
and `SafeAtoms` then copies and escapes every entry: most of the 70-120 µs an access line cost per
request, as much as a quarter of what `/healthz` costs (docs/architecture.md §7, "Cost"). When the
format names only the plain atoms (gunicorn's default format does), only those are built; a format
that names a header or an environ variable gets gunicorn's atoms unchanged. Escaping, the line and its
redaction (openplatform/logging.py) are gunicorn's and ours as before.
"""

from __future__ import annotations

import os
import re
import traceback

from gunicorn import glogging

_NAMED = re.compile(r"%\(([^)]*)\)")
#: The atoms `_plain_atoms` builds: gunicorn's own, but for the `{...}i/o/e` ones.
PLAIN = frozenset("h l u t r s m U q H b B f a T D M L p".split())


class AccessLogger(glogging.Logger):
    def setup(self, cfg) -> None:
        super().setup(cfg)
        self._plain_format = set(_NAMED.findall(cfg.access_log_format or "")) <= PLAIN

    def access(self, resp, req, environ, request_time) -> None:
        """gunicorn's, but the line is formatted once here: the record then carries the finished line, and
        each filter and formatter on the way reads it as it is instead of formatting it again."""
        if not self._enabled():
            return
        safe_atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
        try:
            self.access_log.info("%s", self.cfg.access_log_format % safe_atoms)
        except Exception:
            self.error(traceback.format_exc())

    def _enabled(self) -> bool:
        """gunicorn's own test: its `access_log_enabled` (27) or, before it had one, the same condition."""
        enabled = getattr(self, "access_log_enabled", None)
        if enabled is not None:
            return bool(enabled)
        cfg = self.cfg
        return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or getattr(cfg, "logconfig_json", None)
                    or (cfg.syslog and not cfg.disable_redirect_access_to_syslog))

    def atoms(self, resp, req, environ, request_time):
        if not self._plain_format:  # set by setup(), which gunicorn's Logger.__init__ calls
            return super().atoms(resp, req, environ, request_time)
        return self._plain_atoms(resp, environ, request_time)

    def _plain_atoms(self, resp, environ, request_time) -> dict:
        """What gunicorn's `atoms()` puts in its dict before the headers and the environ."""
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        seconds, microseconds = request_time.seconds, request_time.microseconds
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "l": "-",
            "u": self._get_user(environ) or "-",
            "t": self.now(),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status,
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "q": environ.get("QUERY_STRING"),
            "H": environ.get("SERVER_PROTOCOL"),
            "b": sent is not None and str(sent) or "-",
            "B": sent,
            "f": environ.get("HTTP_REFERER", "-"),
            "a": environ.get("HTTP_USER_AGENT", "-"),
            "T": seconds,
            "D": seconds * 1_000_000 + microseconds,
            "M": seconds * 1000 + int(microseconds / 1000),
            "L": f"{seconds}.{microseconds:06d}",
            "p": f"<{os.getpid()}>",
        }
