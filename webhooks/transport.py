"""One webhook POST to an address that was already checked (guard.py), never resolved again.

urllib3 connects to the checked IP; the request carries the URL's host in `Host`, and for https the TLS
handshake sends it as SNI and the certificate is verified against it. So a name that resolves to a
public address for the check and to 127.0.0.1 a moment later (DNS rebinding) cannot redirect us.
Redirects are not followed, at most `read_limit` bytes of the answer are read, and the whole exchange
must finish within `timeout`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import certifi
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from webhooks.guard import Target

#: Certificates of receivers are verified against these CAs (Mozilla's, as `requests` uses).
CA_BUNDLE = certifi.where()


@dataclass(frozen=True)
class Answer:
    status: int | None
    body: bytes
    duration_ms: float
    #: "" when the receiver answered in time; else "timeout" or "network".
    failure: str = ""
    error: str = ""


def _pool(target: Target, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    common = {"host": str(target.address), "port": target.port, "timeout": timeout, "maxsize": 1, "retries": False}
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            **common, server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=CA_BUNDLE,
        )
    return urllib3.HTTPConnectionPool(**common)


def post(target: Target, *, body: bytes, headers: dict[str, str], timeout: float, read_limit: int) -> Answer:
    pool = _pool(target, urllib3.Timeout(connect=timeout, read=timeout))
    started = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        response = pool.urlopen(
            "POST", target.path, body=body,
            headers={**headers, "Host": target.host_header, "Connection": "close", "Accept-Encoding": "identity"},
            redirect=False, retries=False, preload_content=False, assert_same_host=False,
        )
        try:
            data = response.read(read_limit, decode_content=False) or b""
        finally:
            response.close()  # the rest of the answer is never read
        duration = elapsed()
        if duration > timeout * 1000:  # a receiver that trickles its answer past the deadline
            return Answer(response.status, data, duration, "timeout", f"answered after {duration / 1000:.1f} s")
        return Answer(response.status, data, duration)
    except NewConnectionError as exc:  # before ConnectTimeoutError, its base class in urllib3 2
        return Answer(None, b"", elapsed(), "network", f"could not connect: {_reason(exc)}")
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        return Answer(None, b"", elapsed(), "timeout", f"no answer within {timeout:g} s ({exc.__class__.__name__})")
    except SSLError as exc:
        return Answer(None, b"", elapsed(), "network", f"TLS failed: {_reason(exc)}")
    except (ProtocolError, HTTPError, OSError) as exc:
        return Answer(None, b"", elapsed(), "network", f"connection failed: {_reason(exc)}")
    finally:
        pool.close()


def _reason(exc: Exception) -> str:
    text = str(exc)
    # urllib3 prefixes the connection object's repr; the OS error at the end is what matters.
    return text.rsplit(": ", 1)[-1][:300] if ": " in text else text[:300]
