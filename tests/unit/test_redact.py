"""Secrets are masked wherever they stand alone, and innocent words around them survive."""

from __future__ import annotations

from healthd.redact import MASK, redact, register_secret


def test_a_registered_secret_is_masked_as_a_token_not_inside_words() -> None:
    register_secret("guest")
    assert redact("kombu logs in there as guest/guest") == f"kombu logs in there as {MASK}/{MASK}"
    assert redact("amqp://guest:guest@mq1:5672/") == f"amqp://{MASK}:{MASK}@mq1:5672/"
    assert redact("the guests' sparse disks") == "the guests' sparse disks"


def test_a_secret_with_symbols_at_its_edges_is_masked_anywhere() -> None:
    register_secret("-pw!x9")
    assert redact("value=abc-pw!x9") == f"value=abc{MASK}"
    assert redact("token:x-pw!x9y") == f"token:{MASK}"
    assert redact("xx-pw!x9 yy") == f"xx{MASK} yy"  # a symbol at its start: glued on that side too


def test_longer_secrets_first_and_short_ones_never() -> None:
    register_secret("Hunter2-long-secret")
    register_secret("Hunter2")
    assert redact("a Hunter2-long-secret b") == f"a {MASK} b"
    register_secret("ab")
    assert redact("ab abc") == "ab abc"
