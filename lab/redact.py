"""Secrets out of text that leaves a guest: evidence folders, bundles, reports.

Private keys never leave their guests on purpose; this is the net under that rule for text that holds them by
accident (a PEM private key block) or by nature (the SA keys `ip xfrm state` prints)."""

from __future__ import annotations

import re

_PEM_PRIVATE = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL)
_LONG_HEX = re.compile(r"0x[0-9a-fA-F]{32,}")


def scrub(text: str) -> str:
    """A text with private keys and SA key material removed."""
    text = _PEM_PRIVATE.sub("[a private key was here; ikedlab bundles never carry one]", text)
    return _LONG_HEX.sub("0x[redacted]", text)
