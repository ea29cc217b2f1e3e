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


def test_github_tokens_are_masked_by_their_shape_known_or_not() -> None:
    redactor = Redactor()
    installation = "ghs_" + "a1B2" * 9
    redactor.add(installation, ephemeral=True)
    text = f"push with {installation}, leaked ghu_{'x' * 36} and github_pat_{'Y1_' * 10} but not ghs_short"
    assert redactor.redact(text) == "push with ***, leaked *** and *** but not ghs_short"
    assert redactor._forms == set()  # tokens are not remembered one by one


def test_adding_values_does_not_recompile_until_used() -> None:
    redactor = Redactor()
    for n in range(200):
        redactor.add(f"project-secret-{n}")
    assert redactor._pattern is None  # nothing compiled yet
    assert redactor.redact("x project-secret-199 y") == "x *** y"
