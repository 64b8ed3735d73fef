"""Text preprocessing shared by training and serving: one function, one version.

Bump ``PREPROCESSING_VERSION`` whenever :func:`normalise` changes; an artifact records the
version it was trained with and the loader refuses a mismatch.
"""

from __future__ import annotations

import html
import re

PREPROCESSING_VERSION = 1

_MENTION = re.compile(r"(?<![\w@])@\w{1,30}")
_LINK = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_ESCAPED_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Mentions -> ``@user``, links -> ``http``, HTML entities and literal ``\\uXXXX``
    escapes decoded, whitespace collapsed. Truncation is left to the tokenizer."""
    text = _ESCAPED_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = html.unescape(text)
    text = _LINK.sub("http", text)
    text = _MENTION.sub("@user", text)
    return _SPACE.sub(" ", text).strip()
