import html
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from models.preprocess import normalise
from worker.privacy import Pseudonymiser


def test_pseudonyms_are_stable_keyed_and_not_the_id() -> None:
    a, b = Pseudonymiser(b"k1"), Pseudonymiser(b"k2")
    assert a("alice") == a("alice") != a("bob")
    assert a("alice") != b("alice")
    assert "alice" not in (a("alice") or "")
    assert a(None) is None


def test_normalise_mentions_links_entities_and_space() -> None:
    text = "@Some_One   look: https://t.co/abc &amp; www.x.org\\u2019s  \n mail a@b.com"
    assert normalise(text) == "@user look: http & http mail a@b.com"


# Pieces that trigger (or nearly trigger) each rewrite, mixed with arbitrary text: the fast
# path's substring tests must never skip a rewrite the plain version would make.
_PIECES = [
    "@",
    "@user_1",
    "a@b.com",
    "&amp;",
    "&#39;",
    "&",
    "\\u00e9",
    "\\u",
    "\\u12G4",
    "https://",
    "HTTP://",
    "hTtPs://",
    "://",
    "www.",
    "WWW.",
    "wWw.",
    "ww",
    "http",
    ".org",
    "x",
    "é",
    "ſ",
    " ",
    "  ",
    "\t",
    "\n",
    "\u00a0",
    "\u2003",
    "\x1c",
    "\u3000",
    "\u200b",
]


def normalise_reference(text: str) -> str:
    """normalise() as plainly as it can be written: every rewrite on every text."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    text = html.unescape(text)
    text = re.sub(r"(?:https?://|www\.)\S+", "http", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<![\w@])@\w{1,30}", "@user", text)
    return re.sub(r"\s+", " ", text).strip()


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
        st.text(max_size=60),
        st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), max_size=10).map(
            "".join
        ),
    )
)
def test_the_fast_normalise_equals_the_plain_one(text: str) -> None:
    assert normalise(text) == normalise_reference(text)
