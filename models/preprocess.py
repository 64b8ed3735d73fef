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
    escapes decoded, whitespace collapsed. Truncation is left to the tokenizer.

    Each rewrite runs only where its pattern can match (a substring test first): on a GPU
    this function, not the model, set the pace of scoring. The result is exactly
    :func:`normalise_reference`'s (a property test holds them equal)."""
    if "\\u" in text:
        text = _ESCAPED_UNICODE.sub(_unescape_unicode, text)
    if "&" in text:
        text = html.unescape(text)
    lowered = text.lower()
    if "://" in text or "www." in lowered:
        text = _LINK.sub("http", text)
    if "@" in text:
        text = _MENTION.sub("@user", text)
    return " ".join(text.split())


def normalise_reference(text: str) -> str:
    """:func:`normalise` as plainly as it can be written: every rewrite on every text."""
    text = _ESCAPED_UNICODE.sub(_unescape_unicode, text)
    text = html.unescape(text)
    text = _LINK.sub("http", text)
    text = _MENTION.sub("@user", text)
    return _SPACE.sub(" ", text).strip()


def _unescape_unicode(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))
