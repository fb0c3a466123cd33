"""redact(text): every URL password in a text replaced by ***, for logs, errors and --json."""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

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


def redact(text: str) -> str:
    """The text with the password of every `scheme://user:password@host` URL replaced by ***.

    URLs without a password, and `user@host` without a scheme, are left as they are.
    """
    if "://" not in text:
        return text
    return _USERINFO.sub(rf"\g<prefix>:{MASK}@", text)
