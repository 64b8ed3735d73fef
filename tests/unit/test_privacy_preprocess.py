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
