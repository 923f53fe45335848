"""HTTP access control for everything the worker serves (metrics, health, the dashboard).

When ``WEB_TOKEN`` is set, every request must carry it, as ``Authorization: Bearer <token>``
or, for clients that cannot set headers (a browser's EventSource, a bookmarked dashboard URL),
as ``?token=<token>``. The comparison is constant-time. Requests without a valid token get
``401`` with a ``WWW-Authenticate: Bearer`` header and nothing else.

The paths in ``OPEN_PATHS`` (``/health``) stay reachable without the token so that liveness
probes need no secret; their handlers call :func:`is_authenticated` and leave out details for
anonymous callers (the status code and the one-word status only).

The token is never logged: the middleware logs nothing, ``Settings`` keeps the token in a
``SecretStr``, and a filter on aiohttp's loggers masks ``token=`` query values (and the token
itself) in access and error logs, for servers that run with an access log. A token in a URL can
still end up in a proxy's or a browser's history; prefer the header where the client allows it.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from stream_app.settings import Settings

#: Reachable without the token (handlers must not reveal details to anonymous callers).
OPEN_PATHS: frozenset[str] = frozenset({"/health"})
#: ``request[AUTHENTICATED]`` is True when the request carried the token (or none is configured).
AUTHENTICATED: web.RequestKey[bool] = web.RequestKey("stream_app.authenticated", bool)
_INSTALLED: web.AppKey[bool] = web.AppKey("stream_app.token_auth_installed", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def presented_token(request: web.Request) -> str | None:
    """The token the request presents: the ``Authorization: Bearer`` header, else ``?token=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison (no early exit on the first differing byte).

    >>> token_matches("s3cret", "s3cret"), token_matches("s3cret", "s3creT"), token_matches("s3cret", None)
    (True, False, False)
    """
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def is_authenticated(request: web.Request) -> bool:
    """Whether the middleware let this request in with the token (True when no token is set)."""
    return bool(request.get(AUTHENTICATED, False))


def token_middleware(settings: Settings) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware enforcing ``settings.web_token`` (a no-op gate when it is unset)."""
    secret = settings.web_token

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        ok = secret is None or token_matches(secret.get_secret_value(), presented_token(request))
        request[AUTHENTICATED] = ok
        if not ok and request.path not in OPEN_PATHS:
            return web.json_response(
                {"error": "unauthorized", "detail": "this endpoint requires the WEB_TOKEN (Authorization: Bearer)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="churn-stream"'},
            )
        return await handler(request)

    return require_token


_TOKEN_PARAM = re.compile(r"(?i)([?&]token=)[^&\s\"']*")
#: aiohttp's loggers that can print a request line or URL
AIOHTTP_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web")


class RedactTokenFilter(logging.Filter):
    """Masks ``token=...`` query values and the configured token in log records.

    >>> f = RedactTokenFilter("s3cret")
    >>> rec = logging.LogRecord("aiohttp.access", 20, "", 0, 'GET /x?a=1&token=s3cret HTTP/1.1', None, None)
    >>> f.filter(rec), rec.getMessage()
    (True, 'GET /x?a=1&token=*** HTTP/1.1')
    """

    def __init__(self, secret: str | None) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _TOKEN_PARAM.sub(r"\1***", msg)
        if self.secret:
            clean = clean.replace(self.secret, "***")
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def install_token_auth(web_app: web.Application, settings: Settings) -> None:
    """Add :func:`token_middleware` to an aiohttp application once (idempotent), in front of
    every route, so the metrics, health and dashboard modules can each call it safely; and mask
    tokens in aiohttp's logs."""
    if web_app.get(_INSTALLED):
        return
    web_app.middlewares.insert(0, token_middleware(settings))
    web_app[_INSTALLED] = True
    secret = settings.web_token.get_secret_value() if settings.web_token else None
    for name in AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokenFilter) and f.secret == secret for f in logger.filters):
            logger.addFilter(RedactTokenFilter(secret))
