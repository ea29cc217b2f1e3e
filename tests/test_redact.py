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
    assert redactor._patterns.every is None  # nothing compiled yet
    assert redactor.redact("x project-secret-199 y") == "x *** y"


SECRET = "s3cr3t-Value_0123456789abcdefXYZ"  # 32 characters


def test_base64_of_a_secret_is_masked_at_every_byte_offset_and_across_line_breaks() -> None:
    import subprocess
    redactor = Redactor([SECRET])
    for prefix in ("", "x", "xy", "xyz"):  # `printf "x%s" "$S" | base64` shifts the secret by a byte
        for encoded in (base64.b64encode((prefix + SECRET).encode()).decode(),
                        base64.urlsafe_b64encode((prefix + SECRET + "!").encode()).decode()):
            masked = redactor.redact(encoded)
            assert "***" in masked and len(masked) < len(encoded) - 30, (prefix, encoded, masked)
    # `env | base64`: every variable's value, whatever its offset and wherever base64 wraps its lines
    env = "".join(f"VAR_{n}={'v' * n}\nSECRET_{n}={SECRET}\n" for n in range(12))
    wrapped = subprocess.run(["base64"], input=env.encode(), capture_output=True, check=True).stdout.decode()
    assert "\n" in wrapped.strip()
    masked = redactor.redact(wrapped)
    assert masked.count("***") == 12
    # what is left, decoded at any alignment, holds no four characters of the secret in a row
    for piece in masked.replace("\n", "").split("***"):
        for skip in range(4):
            usable = piece[skip:][:len(piece[skip:]) // 4 * 4]
            decoded = base64.b64decode(usable)
            assert not any(SECRET[i:i + 4].encode() in decoded for i in range(len(SECRET) - 3)), (piece, decoded)


def test_an_excerpt_masks_the_part_of_a_secret_its_cut_went_through() -> None:
    redactor = Redactor([SECRET])
    for kept in range(4, len(SECRET)):
        assert redactor.redact_excerpt(SECRET[-kept:] + " and on", cut_start=True) == "*** and on"
        assert redactor.redact_excerpt("so far " + SECRET[:kept], cut_end=True) == "so far ***"
    for kept in range(1, 4):  # as likely a coincidence as a secret's part: left out, not masked
        assert redactor.redact_excerpt(SECRET[-kept:] + " and on", cut_start=True) == " and on"
        assert redactor.redact_excerpt("so far " + SECRET[:kept], cut_end=True) == "so far "
    assert redactor.redact_excerpt(SECRET[5:20], cut_start=True, cut_end=True) == "***"
    assert redactor.redact_excerpt(f"x{SECRET[-9:]} {SECRET} {SECRET[:7]}", cut_start=True) == \
        f"x{SECRET[-9:]} *** {SECRET[:7]}"  # not at a cut: not a secret's part
    # uncut ends are left alone, and a whole secret at a cut is masked once
    assert redactor.redact_excerpt(SECRET[-4:] + " tail", cut_end=True) == SECRET[-4:] + " tail"
    assert redactor.redact_excerpt(SECRET + SECRET[:3], cut_start=True, cut_end=True) == "***"


def test_json_bodies_are_masked_but_for_their_identifiers() -> None:
    redactor = Redactor([SECRET])
    body = {"head_sha": f"a{SECRET}", "output": {"title": f"t {SECRET}", "annotations": [
        {"path": f"src/{SECRET}.py", "message": f"found {SECRET}", "start_line": 3}]}}
    assert redactor.redact_json(body, keep={"head_sha", "path"}) == {
        "head_sha": f"a{SECRET}", "output": {"title": "t ***", "annotations": [
            {"path": f"src/{SECRET}.py", "message": "found ***", "start_line": 3}]}}


def test_a_child_masks_what_its_parent_learns_later() -> None:
    parent = Redactor()
    child = parent.child(["project-secret"])
    parent.add("later-app-secret")
    assert child.redact("project-secret later-app-secret") == "*** ***"
