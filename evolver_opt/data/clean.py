"""Text cleaning and the duplicate key."""

from __future__ import annotations

import html
import re
import unicodedata

_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unescape HTML entities, normalize Unicode (NFC) and collapse whitespace."""
    text = unicodedata.normalize("NFC", html.unescape(text))
    return _SPACE.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """Key under which two texts count as the same: cleaned, case-folded."""
    return clean_text(text).casefold()
