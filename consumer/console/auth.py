"""The console's optional shared-secret login.

Passwords are kept as scrypt hashes, `scrypt$16384$8$1$<salt base64>$<hash base64>`
(`hash_password`; `python -m consumer.console.auth` prompts for one). `install_login` puts a
login in front of a Starlette application: a signed session cookie (`kvsa_console`, HttpOnly,
SameSite=strict, 12 h from the login) and a guard that sends browsers to `/console/login` and
answers the JSON API 401. `/health`, the login page and `/console/static/` stay open. Without a
password hash nothing is installed: the console is open (and served on loopback by default).

The session key is made per process unless one is given: a restart logs everybody out, and
several worker processes need a shared `secret_key`. Logging out clears the cookie in the
browser; a copy of the cookie taken earlier stays valid until its 12 hours are over.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import getpass
import hashlib
import hmac
import secrets
from functools import cache
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
HASH_FORMAT = "scrypt$16384$8$1$<salt base64>$<hash base64>"
MAX_SCRYPT_MEMORY = 64 * 2 ** 20  # 128 * n * r: hashes asking for more are refused
MIN_PASSWORD_LENGTH = 12
COOKIE = "kvsa_console"
SESSION_SECONDS = 12 * 3600
FAILURE_DELAY = 1.0  # seconds before a failed login is answered
MAX_FORM_BYTES = 8192
LOGIN_PATH = "/console/login"
OPEN_PATHS = ("/health", LOGIN_PATH)
STATIC_PREFIX = "/console/static/"
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # kept as they are when a path is percent-encoded again


def hash_password(password: str) -> str:
    """The scrypt hash of `password` (n=2**14, r=8, p=1, a random 16-byte salt)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt),
                     _b64(digest)))


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches `hashed` (compared in constant time); False for a hash that
    is malformed or asks for more than 64 MiB of scrypt memory."""
    parsed = _parse(hashed)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    try:
        candidate = _scrypt(password.encode("utf-8"), salt, n, r, p, len(digest))
    except (UnicodeEncodeError, ValueError, MemoryError):
        return False
    return hmac.compare_digest(candidate, digest)


def check_password_hash(hashed: str) -> str:
    """`hashed` without surrounding white space when it is a hash `verify_password` can use;
    else ValueError naming `console.password` and the expected format (never the value, which
    may be a password written in plain text)."""
    value = hashed.strip() if isinstance(hashed, str) else ""
    if _parse(value) is None:
        raise ValueError(f"console.password: expected a scrypt hash {HASH_FORMAT!r} (make one "
                         f"with `python -m consumer.console.auth`), got something else; a "
                         f"password in plain text is not accepted")
    return value


def prompt_password_hash() -> str:
    """Reads a password twice from the terminal (not echoed) and returns its hash; ValueError
    when the two differ or it is shorter than 12 characters."""
    password = getpass.getpass("console password: ")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if getpass.getpass("again: ") != password:
        raise ValueError("the two passwords differ")
    return hash_password(password)


def install_login(app: Starlette, templates: Jinja2Templates, password_hash: str | None,
                  secret_key: str | None = None) -> None:
    """Puts the login in front of `app` (before it starts): the session middleware, the guard
    inside it, and the routes `GET|POST /console/login` (`console-login`, template
    `login.html` with `error` and `next`) and `POST /console/logout` (`console-logout`). The
    guard sets `request.state.logged_in`. Nothing when `password_hash` is None; ValueError
    (from check_password_hash) when it is not a hash."""
    if password_hash is None:
        return
    hashed = check_password_hash(password_hash)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            target = safe_next(request.query_params.get("next"), request.scope)
            if request.session.get("console") is True:
                return RedirectResponse(target, status_code=303)
            return _login_page(templates, request, target, error=False)
        form = await _form(request)
        target = safe_next(form.get("next", request.query_params.get("next")), request.scope)
        password = form.get("password", "")
        if password and await run_in_threadpool(verify_password, password, hashed):
            request.session.clear()
            request.session["console"] = True
            return RedirectResponse(target, status_code=303)
        await asyncio.sleep(FAILURE_DELAY)
        return _login_page(templates, request, target, error=True)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse(_root(request.scope) + LOGIN_PATH, status_code=303)

    # first, so that no catch-all route of the application can shadow them
    app.router.routes[0:0] = [
        Route(LOGIN_PATH, login, methods=["GET", "POST"], name="console-login"),
        Route("/console/logout", logout, methods=["POST"], name="console-logout")]
    # the last added runs first: the session is in the scope when the guard looks
    app.add_middleware(LoginGuard)
    app.add_middleware(SessionMiddleware, secret_key=secret_key or _process_key(),
                       session_cookie=COOKIE, max_age=SESSION_SECONDS, same_site="strict",
                       https_only=False)


class LoginGuard:
    """ASGI middleware, inside SessionMiddleware: lets a logged-in session (`console` is True)
    and the open paths through; otherwise a page under /console (or the site's front page /) is
    redirected (303) to the login page with `next`, anything else answered 401 JSON. Sets `state.logged_in`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        logged_in = connection.session.get("console") is True
        connection.state.logged_in = logged_in
        path = _route_path(scope)
        if logged_in or is_open(path):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path in ("/", "/console") or path.startswith("/console/"):
            target = quote(scope["path"], safe=PATH_SAFE)
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            response: Response = RedirectResponse(
                f"{_root(scope)}{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
        else:
            response = JSONResponse({"error": f"log in at {LOGIN_PATH}"}, status_code=401)
        await response(scope, receive, send)


def is_open(path: str) -> bool:
    """Paths served without a login: /health, the login page, the console's static files."""
    if path in OPEN_PATHS:
        return True
    return path.startswith(STATIC_PREFIX) and ".." not in path.split("/")


def safe_next(value: str | None, scope: Scope | None = None) -> str:
    """`value` when it is a path on this site (starts with one `/`, no backslash, no control
    characters, at most 2000 characters), else the console's front page."""
    if (isinstance(value, str) and value.startswith("/") and not value.startswith("//")
            and "\\" not in value and len(value) <= 2000
            and all(" " < ch != "\x7f" for ch in value)):
        return value
    return (_root(scope) if scope is not None else "") + "/console/"


def _login_page(templates: Jinja2Templates, request: Request, target: str, error: bool
                ) -> Response:
    return templates.TemplateResponse(
        request, "login.html", {"error": error, "next": target, "logged_in": False},
        status_code=401 if error else 200, headers={"Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body's first value per name ({} for another content type or a body over
    8 KiB); python-multipart, which request.form() needs, is not a dependency."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() \
            != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True,
                          max_num_fields=20)
    except ValueError:  # too many fields
        return {}
    return {name: values[0] for name, values in fields.items()}


def _parse(hashed: object) -> tuple[int, int, int, bytes, bytes] | None:
    if not isinstance(hashed, str):
        return None
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    if not all(part.isascii() and part.isdigit() and len(part) <= 8 for part in parts[1:4]):
        return None
    n, r, p = (int(part) for part in parts[1:4])
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 \
            or 128 * n * r > MAX_SCRYPT_MEMORY:
        return None
    try:
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        return None
    if not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        return None
    return n, r, p, salt, digest


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=MAX_SCRYPT_MEMORY + 2 ** 20 + 128 * r * p)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _root(scope: Scope) -> str:
    return scope.get("root_path", "")


def _route_path(scope: Scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


@cache
def _process_key() -> str:
    return secrets.token_urlsafe(32)


if __name__ == "__main__":
    try:
        print(prompt_password_hash())
    except (ValueError, EOFError, KeyboardInterrupt) as err:
        raise SystemExit(f"no hash made: {err}") from None
