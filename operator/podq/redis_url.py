"""Where podq's commands (worker, operator, web, the CLI) take their Redis URL from.

`--redis-url`, else `$PODQ_REDIS_URL`, else the local default. The chart builds that URL
as `redis://[user]:$(PODQ_REDIS_PASSWORD)@host:port/db`: Kubernetes puts the Secret's
value in as it is, so a password holding `/`, `@`, `:`, `%` or `?` would break the URL.
With `$PODQ_REDIS_PASSWORD` set, its raw form in the userinfo is percent-encoded here
(redis-py decodes the userinfo), so any password works.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
URL_ENV = "PODQ_REDIS_URL"
PASSWORD_ENV = "PODQ_REDIS_PASSWORD"
HELP = f"Redis URL (default: ${URL_ENV} or {DEFAULT_REDIS_URL})"


def redis_url(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The Redis URL a command uses (see the module docstring)."""
    url = explicit or environ.get(URL_ENV) or DEFAULT_REDIS_URL
    return encode_password(url, environ.get(PASSWORD_ENV))


def encode_password(url: str, password: str | None) -> str:
    """url with password, where it stands raw after the scheme and the optional user
    name, percent-encoded; url unchanged otherwise (already encoded, or another)."""
    if not password:
        return url
    scheme, sep, rest = url.partition("://")
    found = re.match(r"([^:@/?#]*):" + re.escape(password) + "@", rest) if sep else None
    if found is None:
        return url
    user = found.group(1)
    quoted = urllib.parse.quote(password, safe="")
    return f"{scheme}://{user}:{quoted}@{rest[found.end():]}"
