"""Pseudonymisation of author ids: a keyed hash, so ids cannot be reversed or re-derived
without the key, yet the same author always maps to the same pseudonym."""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the pseudonym key must not be empty")
        self._key = key

    def __call__(self, author_id: str | None) -> str | None:
        if author_id is None:
            return None
        digest = hmac.new(self._key, author_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:32]
