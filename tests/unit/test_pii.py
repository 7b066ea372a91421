"""The PII detector: recognizers per format, hard negatives, Chinese text, overlaps, redaction, policy
config, validators, the labeled corpus and its evaluation."""

from __future__ import annotations

import re

import pytest

from bulwark.pii import (
    BUILTIN_RECOGNIZERS,
    LabeledText,
    PatternRecognizer,
    Span,
    TextScanner,
    evaluate,
    generate_corpus,
    get_validator,
    placeholder,
)
from bulwark.pii.validators import card_number, cn_resident_id, iban, ip_address, luhn

SCANNER = TextScanner()


def found(text: str) -> list[tuple[str, str]]:
    """(entity, matched substring) of every span the default scanner reports."""
    return [(s.entity, text[s.start:s.end]) for s in SCANNER.scan(text)]


# ---------------------------------------------------------------------------------------------- formats
DETECTED = [
    # EMAIL
    ("EMAIL", "anna.smith@example.com"),  # dotted local part
    ("EMAIL", "anna+shop@example.com"),  # plus-tag
    ("EMAIL", "ANNA.SMITH@EXAMPLE.COM"),  # upper case
    ("EMAIL", "user123@mail.corp.example.co.uk"),  # digits, nested subdomains
    ("EMAIL", "first_last-99@my-shop.example.net"),  # underscore, dash, dashed domain
    # PHONE
    ("PHONE", "+44 20 7946 0958"),  # UK, spaced groups
    ("PHONE", "+1 (415) 555-2671"),  # US, area code in parentheses
    ("PHONE", "+49 30 12345678"),  # Germany
    ("PHONE", "+33 6 12 34 56 78"),  # France, pairs
    ("PHONE", "+31612345678"),  # Netherlands, no separators
    ("PHONE", "0044 20 7946 0958"),  # 00 instead of +
    ("PHONE", "0049 30 12345678"),  # 00, Germany
    ("PHONE", "+49 (0)30 12345678"),  # trunk zero in parentheses
    ("PHONE", "+1.415.555.2671"),  # dotted
    ("PHONE", "13812345678"),  # bare Chinese mobile
    ("PHONE", "+86 138 1234 5678"),  # Chinese mobile, +86 and spaces
    ("PHONE", "+8613812345678"),  # Chinese mobile, +86 glued
    ("PHONE", "138-1234-5678"),  # Chinese mobile, dashes
    ("PHONE", "0086 199 1234 5678"),  # Chinese mobile, 00 prefix
    # CREDIT_CARD
    ("CREDIT_CARD", "4111111111111111"),  # Visa, bare
    ("CREDIT_CARD", "4111 1111 1111 1111"),  # Visa, spaces
    ("CREDIT_CARD", "5500-0000-0000-0004"),  # Mastercard, dashes
    ("CREDIT_CARD", "378282246310005"),  # Amex, bare 15
    ("CREDIT_CARD", "3782 822463 10005"),  # Amex, 4-6-5
    ("CREDIT_CARD", "30569309025904"),  # Diners, 14 digits
    ("CREDIT_CARD", "4222222222222"),  # Visa, 13 digits
    ("CREDIT_CARD", "6212345678901234569"),  # UnionPay, 19 digits
    ("CREDIT_CARD", "6212 3456 7890 1234 569"),  # UnionPay, 4-4-4-4-3
    # CN_RESIDENT_ID
    ("CN_RESIDENT_ID", "11010519491231002X"),  # check character X
    ("CN_RESIDENT_ID", "11010519491231002x"),  # lower-case x
    ("CN_RESIDENT_ID", "310104198503124217"),  # digit check character
    ("CN_RESIDENT_ID", "110105491231002"),  # old 15-digit form
    # IBAN
    ("IBAN", "DE89370400440532013000"),  # Germany, bare
    ("IBAN", "DE89 3704 0044 0532 0130 00"),  # Germany, groups of four
    ("IBAN", "GB82 WEST 1234 5698 7654 32"),  # UK, letters in the BBAN
    ("IBAN", "FR1420041010050500013M02606"),  # France, 27 characters
    ("IBAN", "NL91ABNA0417164300"),  # Netherlands, 18 characters
    ("IBAN", "NO9386011117947"),  # Norway, shortest (15)
    ("IBAN", "IT60X0542811101000000123456"),  # Italy, CIN letter
    # IP_ADDRESS
    ("IP_ADDRESS", "192.168.1.1"),  # private IPv4
    ("IP_ADDRESS", "1.2.3.4"),  # short IPv4 standing alone
    ("IP_ADDRESS", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),  # full IPv6
    ("IP_ADDRESS", "2001:db8::1"),  # compressed IPv6
    ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a"),  # link-local, compressed
    ("IP_ADDRESS", "::ffff:192.0.2.1"),  # IPv4-mapped
    ("IP_ADDRESS", "2001:DB8::8A2E:370:7334"),  # upper-case hex
]


@pytest.mark.parametrize(("entity", "value"), DETECTED)
@pytest.mark.parametrize("template", ["{v}", "note: {v}, thanks", "sent to {v}."])
def test_scan_planted_value_is_found_whole(entity: str, value: str, template: str) -> None:
    text = template.format(v=value)
    assert found(text) == [(entity, value)]


def test_scan_version_word_before_ipv4_still_found() -> None:
    assert found("version 1.2.3.4") == [("IP_ADDRESS", "1.2.3.4")]


# ---------------------------------------------------------------------------------------------- negatives
NEGATIVES = [
    "order 4532015112830368",  # 16 digits failing Luhn
    "txn 13812345678902",  # 14 digits failing Luhn (starts like a mobile)
    "ref 4111111111111112",  # test card with a wrong last digit
    "amount 1234.56 EUR",  # amount
    "paid USD 12,345.67",  # amount with thousands separator
    "fee +12.50 EUR",  # signed amount
    "+5% vs last month",  # percentage
    "on 2024-03-15 at 15:30",  # date and time
    "at 15:30:45",  # time with seconds
    "2024-03-15T15:30:00+01:00",  # ISO timestamp with offset
    "15.03.2024",  # dotted date
    "2024年3月15日",  # Chinese date
    "app v1.2.3.4",  # version string
    "release 1.2.3",  # three-part version
    "rated 10.5",  # decimal
    "999.999.999.999",  # octets out of range
    "01.02.03.04",  # leading zeros (ipaddress rejects them)
    "110105194912310021",  # resident ID with a wrong check character
    "11010519491231002Y",  # resident ID with a non-check letter
    "DE89370400440532013001",  # IBAN with a wrong check
    "request 550e8400-e29b-41d4-a716-446655440000",  # UUID
    "md5 9e107d9d372bb6826bd81d3542a419d6",  # hex hash
    "sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",  # hex hash
    "MAC 00:1A:2B:3C:4D:5E",  # MAC address, not IPv6
    "3 items",  # short number
    "room 1204",  # short number
    "since 1998",  # year
    "10115 Berlin",  # German postcode
    "SW1A 1AA",  # UK postcode
    "邮编100080",  # Chinese postcode
    "ORD-2024-000517",  # order reference
    "交易号20240315000124",  # Chinese order number failing Luhn
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_scan_hard_negative_finds_nothing(text: str) -> None:
    assert found(text) == []


# ---------------------------------------------------------------------------------------------- Chinese text
@pytest.mark.parametrize(("text", "expected"), [
    ("请联系13812345678谢谢", [("PHONE", "13812345678")]),
    ("客户要求回电+86 138 1234 5678。", [("PHONE", "+86 138 1234 5678")]),
    ("身份证号11010519491231002X已核实", [("CN_RESIDENT_ID", "11010519491231002X")]),
    ("客户邮箱anna@example.com已验证", [("EMAIL", "anna@example.com")]),
    ("登录IP192.168.1.1异常", [("IP_ADDRESS", "192.168.1.1")]),
    ("来自2001:db8::1的登录", [("IP_ADDRESS", "2001:db8::1")]),
    ("退款到卡号4111111111111111已冻结", [("CREDIT_CARD", "4111111111111111")]),
    ("转账至账户DE89370400440532013000", [("IBAN", "DE89370400440532013000")]),
    ("手机号13812345678，身份证11010519491231002X。",
     [("PHONE", "13812345678"), ("CN_RESIDENT_ID", "11010519491231002X")]),
])
def test_scan_chinese_text_without_spaces_finds_values(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


# ---------------------------------------------------------------------------------------------- overlaps
@pytest.mark.parametrize(("text", "expected"), [
    ("anna@example.com;+44 20 7946 0958", [("EMAIL", "anna@example.com"), ("PHONE", "+44 20 7946 0958")]),
    ("13812345678/4111111111111111", [("PHONE", "13812345678"), ("CREDIT_CARD", "4111111111111111")]),
    ("a1@example.com,b2@example.org", [("EMAIL", "a1@example.com"), ("EMAIL", "b2@example.org")]),
    # the '0044' inside the IBAN is also a phone candidate: the longer IBAN wins
    ("DE89 3704 0044 0532 0130 00", [("IBAN", "DE89 3704 0044 0532 0130 00")]),
    # the bare mobile inside '+86 ...' loses to the whole international number
    ("+86 138 1234 5678", [("PHONE", "+86 138 1234 5678")]),
    # the IPv4 tail of an IPv4-mapped IPv6 address is not reported on its own
    ("::ffff:192.0.2.1", [("IP_ADDRESS", "::ffff:192.0.2.1")]),
    # an ID-shaped 18-digit number that passes Luhn is still only an ID
    ("11010519491231002X 4111111111111111",
     [("CN_RESIDENT_ID", "11010519491231002X"), ("CREDIT_CARD", "4111111111111111")]),
])
def test_scan_adjacent_or_overlapping_values_resolve_to_expected_spans(
        text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


def test_scan_overlapping_candidates_longer_then_higher_score_wins() -> None:
    short_high = PatternRecognizer.from_config({"entity": "SHORT", "patterns": ["ab"], "score": 0.9})
    long_low = PatternRecognizer.from_config({"entity": "LONG", "patterns": ["abc"], "score": 0.3})
    same_low = PatternRecognizer.from_config({"entity": "LOW", "patterns": ["xyz"], "score": 0.4})
    same_high = PatternRecognizer.from_config({"entity": "HIGH", "patterns": ["xyz"], "score": 0.8})
    spans = TextScanner([short_high, long_low, same_low, same_high]).scan("abc xyz")
    assert [(s.entity, s.start, s.end) for s in spans] == [("LONG", 0, 3), ("HIGH", 4, 7)]


def test_scan_context_word_near_value_raises_score() -> None:
    plain = SCANNER.scan("value 4111111111111111")[0]
    boosted = SCANNER.scan("card 4111111111111111")[0]
    assert boosted.score > plain.score


def test_scan_prefilter_unmet_skips_recognizer() -> None:
    anything = PatternRecognizer(entity="ANY", patterns=(re.compile(r"\w+"),), triggers=(("@", 1),),
                                 min_digits=2)
    scanner = TextScanner([anything])
    assert scanner.scan("no trigger 12") == []
    assert scanner.scan("one digit @ 1") == []
    assert [s.entity for s in scanner.scan("with @ 12")] == ["ANY", "ANY"]
    four_digits = PatternRecognizer(entity="RUN", patterns=(re.compile(r"\d+"),), shapes=(b"0000",))
    assert TextScanner([four_digits]).scan("12 34") == []
    assert [s.end for s in TextScanner([four_digits]).scan("12 3456")] == [2, 7]


def test_scan_empty_text_returns_no_spans() -> None:
    assert SCANNER.scan("") == []


# ---------------------------------------------------------------------------------------------- redaction
def test_redact_default_placeholder_replaces_each_value() -> None:
    text = "mail anna@example.com or call +44 20 7946 0958."
    redacted, spans = SCANNER.redact(text)
    assert redacted == "mail <EMAIL> or call <PHONE>."
    assert [text[s.start:s.end] for s in spans] == ["anna@example.com", "+44 20 7946 0958"]


def test_redact_custom_replacer_receives_span_and_value() -> None:
    seen: list[tuple[str, str]] = []

    def tokenize(span: Span, value: str) -> str:
        seen.append((span.entity, value))
        return f"<{span.entity}:tok_{len(value)}>"

    redacted, _ = SCANNER.redact("请联系13812345678谢谢", tokenize)
    assert redacted == "请联系<PHONE:tok_11>谢谢"
    assert seen == [("PHONE", "13812345678")]


def test_redact_text_without_values_returns_it_unchanged() -> None:
    assert SCANNER.redact("dinner with friends") == ("dinner with friends", [])


def test_placeholder_given_span_returns_entity_in_brackets() -> None:
    assert placeholder(Span("IBAN", 0, 4, 1.0), "DE89") == "<IBAN>"


# ---------------------------------------------------------------------------------------------- policy config
def test_from_config_employee_id_is_detected_and_validator_applies() -> None:
    employee = PatternRecognizer.from_config(
        {"entity": "EMPLOYEE_ID", "patterns": [r"EMP-\d{6}"], "context": ["employee"], "score": 0.7})
    scanner = TextScanner(BUILTIN_RECOGNIZERS + (employee,))
    assert [(s.entity, s.score) for s in scanner.scan("employee EMP-123456, mail a@example.com")] == [
        ("EMPLOYEE_ID", pytest.approx(0.8)), ("EMAIL", pytest.approx(1.0))]
    checked = PatternRecognizer.from_config(
        {"entity": "ACCOUNT", "patterns": [r"\d{16}"], "validator": "luhn"})
    assert [s.entity for s in TextScanner([checked]).scan("4111111111111111 4111111111111112")] == ["ACCOUNT"]


@pytest.mark.parametrize(("config", "key"), [
    ({"patterns": ["x"]}, "entity"),  # missing entity
    ({"entity": "employee id", "patterns": ["x"]}, "entity"),  # not an upper-case name
    ({"entity": "E"}, "patterns"),  # missing patterns
    ({"entity": "E", "patterns": "EMP-\\d+"}, "patterns"),  # a string, not a list
    ({"entity": "E", "patterns": []}, "patterns"),  # empty list
    ({"entity": "E", "patterns": ["EMP-(\\d"]}, "patterns"),  # invalid regex
    ({"entity": "E", "patterns": ["\\d*"]}, "patterns"),  # matches the empty string
    ({"entity": "E", "patterns": ["x"], "context": "employee"}, "context"),  # a string, not a list
    ({"entity": "E", "patterns": ["x"], "validator": "md5"}, "validator"),  # unknown validator
    ({"entity": "E", "patterns": ["x"], "score": 1.5}, "score"),  # out of range
    ({"entity": "E", "patterns": ["x"], "score": True}, "score"),  # bool is not a number here
    ({"entity": "E", "patterns": ["x"], "min_digits": -1}, "min_digits"),  # negative
    ({"entity": "E", "patterns": ["x"], "regex": ["y"]}, "regex"),  # unknown key
])
def test_from_config_bad_key_raises_value_error_naming_it(config: dict, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        PatternRecognizer.from_config(config)


def test_from_config_unknown_validator_message_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        PatternRecognizer.from_config({"entity": "E", "patterns": ["x"], "validator": "md5"})
    assert all(name in str(info.value) for name in ("luhn", "iban", "cn_resident_id", "ip_address"))


# ---------------------------------------------------------------------------------------------- validators
@pytest.mark.parametrize(("validator", "value", "valid"), [
    (luhn, "4111 1111 1111 1111", True),  # separators ignored
    (luhn, "4111111111111112", False),  # last digit off by one
    (luhn, "41111x11", False),  # not digits
    (card_number, "110105194912310021", False),  # passes Luhn but is an ID-shaped 18-digit number
    (card_number, "110105491231002", False),  # Luhn-valid old resident ID, not Amex-prefixed
    (cn_resident_id, "11010519491231002X", True),  # ISO 7064 MOD 11-2 check X
    (cn_resident_id, "110105194912310021", False),  # wrong check character
    (cn_resident_id, "110105194902300025", False),  # 30 February
    (cn_resident_id, "990105194912310029", False),  # no province 99
    (cn_resident_id, "110105491231002", True),  # 15-digit form, 1949-12-31
    (cn_resident_id, "110105491331002", False),  # 15-digit form, month 13
    (iban, "GB82WEST12345698765432", True),  # mod 97 == 1
    (iban, "GB82WEST1234569876543", False),  # one character short for GB
    (iban, "XX82WEST12345698765432", False),  # unregistered country
    (ip_address, "255.255.255.255", True),  # broadcast
    (ip_address, "256.1.1.1", False),  # octet out of range
    (ip_address, "2001:db8::1::2", False),  # two '::'
])
def test_validator_value_returns_expected_verdict(validator, value: str, valid: bool) -> None:
    assert validator(value) is valid


def test_get_validator_unknown_name_raises_listing_valid_ones() -> None:
    assert get_validator("luhn") is luhn
    with pytest.raises(ValueError, match="valid: .*luhn"):
        get_validator("crc32")


# ---------------------------------------------------------------------------------------------- corpus
def test_generate_corpus_same_seed_gives_same_texts() -> None:
    a, b, c = generate_corpus(50, seed=3), generate_corpus(50, seed=3), generate_corpus(50, seed=4)
    assert a == b
    assert a != c


def test_generate_corpus_planted_values_are_valid_and_varied() -> None:
    corpus = generate_corpus(600, seed=11)
    checks = {"CREDIT_CARD": card_number, "CN_RESIDENT_ID": cn_resident_id, "IBAN": iban,
              "IP_ADDRESS": ip_address}
    for item in corpus:
        for span in item.spans:
            value = item.text[span.start:span.end]
            assert value.strip() == value and value
            if span.entity in checks:
                assert checks[span.entity](value), span.entity
    assert any(re.search(r"[\u4e00-\u9fff]", t.text) for t in corpus)
    assert any(re.fullmatch(r"[\x00-\x7f]+", t.text) for t in corpus)
    assert any(not t.spans for t in corpus)
    assert any(len(t.spans) >= 3 for t in corpus)
    assert any(t.spans and t.spans[0].start == 0 for t in corpus)
    assert any(t.spans and t.spans[-1].end == len(t.text) for t in corpus)
    # a value glued to Chinese characters on both sides
    han = re.compile(r"[\u4e00-\u9fff]")
    assert any(s.start and han.match(t.text[s.start - 1]) and han.match(t.text[s.end:])
               for t in corpus for s in t.spans)


# ---------------------------------------------------------------------------------------------- evaluation
class _Fixed:
    """A scanner that returns the same spans for every text."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans

    def scan(self, text: str) -> list[Span]:
        return self.spans


_PLANTED = [LabeledText("x" * 20, [Span("EMAIL", 0, 10, 1.0)])]


@pytest.mark.parametrize(("predicted", "tp", "fp", "fn"), [
    ([Span("EMAIL", 0, 10, 0.9)], 1, 0, 0),  # exact
    ([Span("EMAIL", 0, 8, 0.9)], 1, 0, 0),  # 80% of the planted length
    ([Span("EMAIL", 0, 7, 0.9)], 0, 1, 1),  # 70%: no match
    ([Span("PHONE", 0, 10, 0.9)], 0, 1, 1),  # wrong entity
    ([Span("EMAIL", 0, 9, 0.9), Span("EMAIL", 1, 10, 0.9)], 1, 1, 0),  # planted span matched once
    ([], 0, 0, 1),  # nothing predicted
])
def test_evaluate_overlap_rule_counts_matches(predicted: list[Span], tp: int, fp: int, fn: int) -> None:
    report = evaluate(_Fixed(predicted), _PLANTED)
    assert (report.overall.tp, report.overall.fp, report.overall.fn) == (tp, fp, fn)


def test_evaluate_report_renders_table_and_dict() -> None:
    report = evaluate(_Fixed([Span("EMAIL", 0, 10, 0.9)]), _PLANTED)
    assert "EMAIL" in report.table() and "overall" in report.table()
    assert report.to_dict()["per_entity"]["EMAIL"] == {
        "tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0}


@pytest.fixture(scope="module")
def corpus_report():
    return evaluate(SCANNER, generate_corpus(3000, seed=7))


def test_evaluate_reference_corpus_meets_recall_and_precision_targets(corpus_report) -> None:
    assert corpus_report.overall.recall >= 0.99, corpus_report.table()
    assert corpus_report.overall.precision >= 0.97, corpus_report.table()
    for score in corpus_report.per_entity.values():
        assert score.recall >= 0.99 and score.precision >= 0.97, corpus_report.table()
    assert set(corpus_report.per_entity) == {"EMAIL", "PHONE", "CREDIT_CARD", "CN_RESIDENT_ID", "IBAN",
                                             "IP_ADDRESS"}
