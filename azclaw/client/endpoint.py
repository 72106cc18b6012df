"""An endpoint, parsed once: where its chat requests go and where the
server's own routes (``/health``, ``/props``, ``/v1/models``) are.

``Endpoint.parse`` accepts ``http://host:port``, ``…/v1`` or the full chat
URL (``…/v1/chat/completions``); a host in another script becomes its
ASCII (IDNA) form. ``chat`` is the URL requests go to, ``root`` the server
root the probes use, ``route("/health")`` one of its routes.

``check_headers`` checks request headers given in settings (a gateway's
own, a router's key) once, so a bad one is a ConfigError at start, not a
failed request.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from ..errors import ConfigError

CHAT_PATH = "/chat/completions"
_HOST = re.compile(r"[A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.%A-Za-z]+\]")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP token (RFC 9110)
_OWN_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}  # the transport sets these
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]{0,8192}")  # what http.client sends as latin-1, no CR or LF


@dataclass(frozen=True)
class Endpoint:
    chat: str  # http(s)://host[:port][/base]/v1/chat/completions
    root: str  # http(s)://host[:port][/base]

    @classmethod
    def parse(cls, url: "str | Endpoint") -> "Endpoint":
        if isinstance(url, Endpoint):
            return url
        try:
            parsed = urllib.parse.urlparse(url.strip())
            port = parsed.port  # a port that is not a number raises here, not in the first request
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"endpoint {url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.netloc or not parsed.hostname:
            raise ConfigError(f"endpoint {url!r}: expected an http:// or https:// URL")
        host = parsed.hostname
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise ConfigError(f"endpoint {url!r}: {parsed.hostname!r} is not a valid host name ({exc})") from None
        shown = f"[{host}]" if ":" in host else host
        if not _HOST.fullmatch(shown):
            raise ConfigError(f"endpoint {url!r}: {parsed.hostname!r} is not a valid host name")
        netloc = shown + (f":{port}" if port is not None else "")
        path = parsed.path.rstrip("/")
        if path.endswith("/v1" + CHAT_PATH):
            base = path[: -len("/v1" + CHAT_PATH)]
        elif path.endswith(CHAT_PATH):
            base = path[: -len(CHAT_PATH)]
        elif path.endswith("/v1"):
            base, path = path[:-3], path + CHAT_PATH
        else:
            base, path = path, path + "/v1" + CHAT_PATH
        chat = urllib.parse.urlunparse(parsed._replace(netloc=netloc, path=path))
        root = urllib.parse.urlunparse(parsed._replace(netloc=netloc, path=base, params="", query="", fragment=""))
        return cls(chat, root)

    def route(self, path: str) -> str:
        """A route of the server itself: ``route("/health")``."""
        return self.root + path

    def __str__(self) -> str:
        return self.chat


def check_headers(headers: object, what: str = "headers") -> dict[str, str]:
    """``headers`` as a dict of names to values, or ConfigError naming the
    first one that HTTP cannot carry."""
    if not isinstance(headers, dict):
        raise ConfigError(f"{what}: expected NAME: VALUE pairs, got {headers!r}"[:200])
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{what}: {name!r} is not a header name (letters, digits and !#$%&'*+.^_`|~-)"[:200])
        if name.lower() in _OWN_HEADERS:
            raise ConfigError(f"{what}: {name} is set by azclaw itself, for every request")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value) or value != value.strip():
            raise ConfigError(f"{what}: {name}: the value {value!r} cannot be sent (text on one line, "
                              "no leading or trailing spaces)"[:300])
    return dict(headers)
