import base64
import io
import logging
from urllib.parse import quote

from bot.logs import configure_logging
from bot.redact import Redactor


def test_plain_base64_and_url_encoded_forms_are_masked() -> None:
    secret = "s3cr3t/value+with=chars"
    redactor = Redactor([secret])
    text = f"a {secret} b {base64.b64encode(secret.encode()).decode()} c {quote(secret, safe='')} d"
    assert redactor.redact(text) == "a *** b *** c *** d"


def test_short_values_are_not_masked_and_child_adds_values() -> None:
    parent = Redactor(["abc", "long-enough"])
    child = parent.child(["project-secret"])
    assert parent.redact("abc long-enough project-secret") == "abc *** project-secret"
    assert child.redact("abc long-enough project-secret") == "abc *** ***"


def test_log_lines_never_carry_a_known_secret() -> None:
    redactor = Redactor(["ghs_supersecrettoken"])
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", redactor=redactor, stream=stream)
    try:
        logging.getLogger("test").info("token is %s", "ghs_supersecrettoken")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "ghs_supersecrettoken" not in stream.getvalue()
    assert '"message": "token is ***"' in stream.getvalue()


def test_ephemeral_values_are_bounded_to_the_newest() -> None:
    redactor = Redactor(["permanent-secret"], max_ephemeral=2)
    for token in ("ghs_token_one", "ghs_token_two", "ghs_token_three"):
        redactor.add(token, ephemeral=True)
    assert redactor.redact("ghs_token_one ghs_token_two ghs_token_three permanent-secret") == \
        "ghs_token_one *** *** ***"
