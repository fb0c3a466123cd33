"""redact(text): every URL password in a text replaced by ***, for logs, errors and --json;
with `secrets`, also each of those values wherever it appears (secret_values finds them)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

__all__ = ["MASK", "redact", "secret_values"]

# Environment variables whose values are secrets, by name.
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|AUTH|CREDENTIAL|PRIVATE|_KEY$", re.I)
_MIN_SECRET = 4  # shorter values would mask ordinary words

MASK = "***"

# scheme://user:password@  (user may be empty: redis://:password@host).
# The lookbehind starts a scheme only at a word boundary, so a long word is scanned once.
# The password runs to the LAST `@` of the URL, because SQLAlchemy and redis-py accept
# unencoded `/ ? # @` in it: masking a path by mistake is better than printing half a
# password. It stops at whitespace, quotes and brackets (a URL inside a repr or a JSON
# string) and at the next `://`, so two URLs glued by a comma are masked one by one. After
# `host:` digits and then `/ ? #` are a port, as in https://host:8080/u?mail=a@b.
_USERINFO = re.compile(
    r"""(?<![A-Za-z0-9+.\-])
        (?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s"'<>`]*)
        :(?!\d+[/?#])(?:(?!://)[^\s"'<>`])*@
    """,
    re.VERBOSE,
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with the password of every `scheme://user:password@host` URL replaced by ***,
    and each of `secrets` (e.g. the worker's passwords, printed bare by a model) too.

    URLs without a password, and `user@host` without a scheme, are left as they are.
    """
    if "://" in text:
        text = _USERINFO.sub(rf"\g<prefix>:{MASK}@", text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= _MIN_SECRET and secret in text:
            text = text.replace(secret, MASK)
    return text


def secret_values(environ: Mapping[str, str], urls: Iterable[str] = ()) -> list[str]:
    """The values a process holds that must never be stored: variables named like secrets
    (…PASSWORD, …TOKEN, …SECRET, …AUTH, …_KEY) and the passwords of `urls`, as written and
    percent-decoded."""
    found = [v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET]
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return [v for v in found if len(v) >= _MIN_SECRET]
