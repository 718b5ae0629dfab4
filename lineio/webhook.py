"""HTTP webhook output: each part's message is POSTed as JSON (stdlib only).

    https://[user:password@]host/path     (user:password becomes HTTP basic authentication)

The message id also travels as the `Idempotency-Key` header. 2xx is delivered; 408, 425, 429
and 5xx, timeouts and refused connections are retried with backoff; any other answer (a 400,
a 404 ...) means the receiver will never take this message: it is kept as rejected, with the
answer, and the next message goes.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from engine.version import __version__

from .message import encode
from .sinks import RejectedMessage, Sink, SinkError, parse_sink_url

__all__ = ["WebhookSink", "TIMEOUT_S", "RETRIED_STATUS"]

TIMEOUT_S = 10.0
RETRIED_STATUS = {408, 425, 429}   # plus every 5xx
ANSWER_CHARS = 200                 # of the receiver's answer kept with an error


class WebhookSink(Sink):
    scheme = "http"

    def __init__(self, url: str):
        super().__init__(url)
        _, parts, _ = parse_sink_url(url)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        self.endpoint = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        self.headers = {"Content-Type": "application/json", "User-Agent": f"DeCo-Inspector/{__version__}"}
        if parts.username:
            token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def deliver(self, message: dict) -> None:
        request = urllib.request.Request(self.endpoint, data=encode(message).encode("utf-8"), method="POST",
                                         headers={**self.headers, "Idempotency-Key": message["message_id"]})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as e:
            self._connected = True
            answer = e.read(ANSWER_CHARS).decode("utf-8", "replace").strip()
            text = f"HTTP {e.code} {e.reason}" + (f": {answer}" if answer else "")
            if e.code in RETRIED_STATUS or e.code >= 500:
                raise SinkError(text) from None
            raise RejectedMessage(text) from None
        except (urllib.error.URLError, OSError) as e:
            self._connected = False
            reason = getattr(e, "reason", None) or e
            raise SinkError(f"cannot reach {urlsplit(self.endpoint).netloc}: {reason}") from None
        self._connected = True
