"""PII redaction: every planted value goes, every look-alike stays."""

from __future__ import annotations

import random
import re
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.data.document import Document
from lmsmith.data.pii import PiiRedactor, redact_pii
from lmsmith.data.step import StepStats
from lmsmith.schema.curate import PiiConfig

# Values that must disappear, by kind.
PLANTED = {
    "email": ["barry@python.org", "jane.doe+news@mail.example.co.uk", "x_y-z@sub.domain.io"],
    "phone": [
        "+1 (415) 555-0132", "415-555-0132", "+44 20 7946 0958", "020 7946 0958", "07700 900123", "+49 30 1234567"
    ],
    "ip_address": ["93.184.216.34", "81.2.69.142", "2001:4860:4860::8888", "2a03:2880:f10c:83:face:b00c:0:25de"],
    "credit_card": ["4111 1111 1111 1111", "5500-0055-5555-5559", "378282246310005", "6011000990139424"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606"],
    "ssn": ["123-45-6789", "078-05-1121"],
    "secret": [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "aB3" * 12,
        "xoxb-123456789012-abcdefghijklmnop",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
}

# Look-alikes that are not personal data and must survive untouched.
KEPT = [
    "Python 3.11.7", "numpy==1.26.4", "version 1.2.3.4", "section 8.2.4.44", "__version__ = '2.7.2.2'",
    "2024-01-15", "15.01.2024", "01/15/2024", "2024-01-15T10:30:45Z", "10:30:45",
    "ISBN 978-3-16-148410-0", "ISBN 0-306-40615-2", "9783161484100",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "abbrev 9fceb02",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "127.0.0.1", "10.0.0.5", "192.168.1.20", "172.16.4.2", "169.254.1.1", "192.0.2.1", "198.51.100.7",
    "203.0.113.9", "0.0.0.0", "255.255.255.255", "224.0.0.251", "::1", "fe80::1ff:fe23:4567:890a", "2001:db8::1",
    "x = a[::2]", "std::vector<int>", "mac 00:1a:2b:3c:4d:5e",
    "4111 1111 1111 1112", "1234 5678 9012 3456", "order 12345678901234", "id 573763426263223372",
    "DE89 3704 0044 0532 0130 01", "666-12-3456", "000-12-3456", "123-00-4567", "900-12-3456",
    "a = +4294967296", "Decimal('+35236450.6')", "pi = 3.14159265358979", "x = 1234567",
    "token_type = 'unstructured'", "password = getpass.getpass()", "token = next_token", 'password="%s"',
    "token = '{token}'", "api_key = '<your key here>'", "@property", "a @ self.weight",
]


def test_every_planted_value_is_replaced_by_its_placeholder():
    for kind, values in PLANTED.items():
        for value in values:
            text = f"Before {value} after.\n"
            out, counts = redact_pii(text)
            assert value not in out, (kind, value, out)
            assert counts == {kind: 1}, (kind, value, out, counts)
            assert f"<{kind.upper()}>" in out


@pytest.mark.parametrize("text", KEPT)
def test_look_alikes_stay(text):
    out, counts = redact_pii(f"Here is {text} in a line.")
    assert out == f"Here is {text} in a line.", counts
    assert not counts


def test_mixed_document_redacts_exactly_the_planted_values():
    rng = random.Random(7)
    pieces = [v for vs in PLANTED.values() for v in vs] + KEPT
    rng.shuffle(pieces)
    text = "\n".join(f"line {i}: {p} ." for i, p in enumerate(pieces))
    out, counts = redact_pii(text)
    for kind, values in PLANTED.items():
        assert counts[kind] == len(values), (kind, counts)
        for value in values:
            assert value not in out
    for kept in KEPT:
        assert kept in out, kept


def test_words_ending_like_version_do_not_protect_an_address():
    out, counts = redact_pii("server 93.184.216.34, dev: 81.2.69.142, nav 8.8.4.40, version 93.184.216.34")
    assert out == "server <IP_ADDRESS>, dev: <IP_ADDRESS>, nav <IP_ADDRESS>, version 93.184.216.34"
    assert counts == {"ip_address": 3}


def test_private_key_block_goes_whole():
    text = (
        "config:\n-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
        "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n-----END RSA PRIVATE KEY-----\ndone"
    )
    out, counts = redact_pii(text)
    assert out == "config:\n<SECRET>\ndone"
    assert counts == {"secret": 1}
    public = "-----BEGIN CERTIFICATE-----\nMIIBszCCAV2gAwIBAgIJAK\n-----END CERTIFICATE-----"
    assert redact_pii(public)[0] == public


def test_assignments_lose_only_their_value():
    text = (
        'api_key = "sk_test_abc123XYZ987"\n"password": "hunter2!"\n'
        'client_secret: \'9f8e7d6c5b\'\nexport GITHUB_TOKEN=ab12cd34ef56\n'
    )
    out, counts = redact_pii(text)
    assert out == (
        'api_key = "<SECRET>"\n"password": "<SECRET>"\n'
        'client_secret: \'<SECRET>\'\nexport GITHUB_TOKEN=<SECRET>\n'
    )
    assert counts == {"secret": 4}


def test_labelled_numbers_count_as_phones_only_after_a_label():
    out, counts = redact_pii("Tel: 01 23 45 67 89, fax 5551234567; PHONE 555 123 4567")
    assert out == "Tel: <PHONE>, fax <PHONE>; PHONE <PHONE>" and counts == {"phone": 3}
    assert redact_pii("scores 01 23 45 67 89 and 5551234567")[1] == {}


def test_obfuscated_email_and_angle_brackets():
    out, counts = redact_pii("Fred Drake <fdrake@acm.org>, or fdrake (at) acm (dot) org.\nNext line")
    assert out == "Fred Drake <<EMAIL>>, or <EMAIL>.\nNext line"
    assert counts == {"email": 2}


def test_kinds_can_be_switched_off():
    text = "mail barry@python.org from 93.184.216.34"
    out, counts = redact_pii(text, PiiConfig(email=False))
    assert out == "mail barry@python.org from <IP_ADDRESS>" and counts == {"ip_address": 1}


def test_config_is_checked():
    assert parse_section(PiiConfig, {"phone": False}, "pii").phone is False
    with pytest.raises(ConfigError, match="pii.emial"):
        parse_section(PiiConfig, {"emial": False}, "pii")
    off = {k: False for k in ("email", "phone", "ip_address", "credit_card", "iban", "ssn", "secret")}
    with pytest.raises(ConfigError, match="enabled=false"):
        parse_section(PiiConfig, off, "pii")


def test_step_counts_redactions_by_kind_and_keeps_every_document():
    docs = [
        Document("a", "write to barry@python.org or guido@python.org", "test"),
        Document("b", "card 4111 1111 1111 1111", "test"),
        Document("c", "nothing personal here, version 3.11.7", "test"),
    ]
    stats = StepStats("pii")
    kept, dropped = PiiRedactor()(docs, stats)
    assert len(kept) == 3 and not dropped
    assert stats.counters == {"redacted:email": 2, "redacted:credit_card": 1, "documents_redacted": 2}
    assert kept[0].text == "write to <EMAIL> or <EMAIL>"


# ---------------------------------------------------------------------------------------------
# Checksums, against independent computations


def _luhn_check_digit(body: str) -> str:
    # Independent of the module: double every second digit from the right of the full number.
    digits = [int(c) for c in body + "0"]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(divmod(d * 2, 10)) if i % 2 else d
    return str((10 - total % 10) % 10)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["4", "51", "55", "37", "6011"]), st.integers(0, 10**18), st.sampled_from(["", " ", "-"]))
def test_luhn_valid_cards_go_and_one_digit_off_stays(prefix, seed, sep):
    length = 15 if prefix == "37" else 16
    body = (prefix + str(seed).zfill(18))[: length - 1]
    number = body + _luhn_check_digit(body)
    wrong = body + str((int(number[-1]) + 1) % 10)
    group = (lambda n: f"{n[:4]}{sep}{n[4:10]}{sep}{n[10:]}") if length == 15 else (
        lambda n: sep.join(n[i : i + 4] for i in range(0, 16, 4)))
    out, counts = redact_pii(f"pay with {group(number)} today")
    assert counts == {"credit_card": 1} and number[-6:] not in out.replace(sep, "")
    out, counts = redact_pii(f"pay with {group(wrong)} today")
    assert "credit_card" not in counts


def _iban(country: str, bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([("DE", 18), ("GB", 18), ("NL", 14), ("ES", 20)]), st.integers(0, 10**20), st.booleans())
def test_mod97_valid_ibans_go_and_corrupted_ones_stay(country_length, seed, spaced):
    country, n = country_length
    bban = str(seed).zfill(n)[-n:]
    if country in ("GB", "NL"):
        bban = "ABCD" + bban[4:]
    iban = _iban(country, bban)
    corrupted = iban[:-1] + str((int(iban[-1]) + 1) % 10)
    show = (lambda s: " ".join(s[i : i + 4] for i in range(0, len(s), 4))) if spaced else (lambda s: s)
    out, counts = redact_pii(f"IBAN: {show(iban)}.")
    assert out == "IBAN: <IBAN>." and counts == {"iban": 1}
    assert "iban" not in redact_pii(f"IBAN: {show(corrupted)}.")[1]


_EMAIL_ANYWHERE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@settings(max_examples=80, deadline=None)
@given(
    st.from_regex(r"[a-z][a-z0-9._+-]{0,12}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,6}){1,2}", fullmatch=True),
    st.lists(st.sampled_from(["the", "mail", "from", "x", "3.11", "(", ")", "<", ">", ",", "\n"]), max_size=8),
)
def test_planted_emails_never_survive(local, domain, filler):
    email = f"{local}@{domain}"
    text = " ".join(filler[: len(filler) // 2] + [email] + filler[len(filler) // 2 :])
    out, counts = redact_pii(text)
    assert email not in out and counts["email"] == 1


def test_python_stdlib_author_emails_all_go():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ("optparse.py", "platform.py", "io.py", "encodings/cp932.py", "xml/etree/ElementInclude.py")
    text = "\n".join((stdlib / name).read_text(encoding="utf-8") for name in names)
    assert _EMAIL_ANYWHERE.search(text)  # the corpus does carry e-mails
    out, counts = redact_pii(text)
    assert not _EMAIL_ANYWHERE.search(out)
    assert counts["email"] >= 5
