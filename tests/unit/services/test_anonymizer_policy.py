"""The anonymization policy: validation errors name the key; operators do what each action says."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bulwark.crypto import KeyRing, Pseudonymizer
from bulwark.events import EventTypeRegistry
from services.ingest_anonymizer.operators import DROP, EventPlan, OperatorKit, _generalize, _mask
from bulwark.pii import BUILTIN_RECOGNIZERS, TextScanner
from services.ingest_anonymizer.policy import (
    DEFAULT_POLICY,
    GeneralizeRule,
    PolicyError,
    check_against_schemas,
    load_policy,
    parse_policy,
)

REG = EventTypeRegistry.default()


def _doc() -> dict:
    return yaml.safe_load(DEFAULT_POLICY.read_text())


def test_default_policy_is_valid_against_the_schemas() -> None:
    policy = load_policy(DEFAULT_POLICY, REG)
    assert policy.event_types["payment.transaction"].default_action == "drop"


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        # an action that does not exist
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(email="hash"), "fields.email"),
        # a negative mask length
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(phone={"action": "mask", "keep_last": -1}),
         "fields.phone.keep_last"),
        # generalize with two kinds at once
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(
            amount={"action": "generalize", "bucket": 10, "date": "year"}), "exactly one of"),
        # an unexpected key in a rule
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(
            email={"action": "encrypt", "algorithm": "des"}), "fields.email.algorithm"),
        # no version
        (lambda d: d.pop("version"), "version"),
        # a bad extra-pattern entity name
        (lambda d: d["text_patterns"][0].update(entity="employee id"), "text_patterns.0.entity"),
    ],
)
def test_policy_shape_errors_name_the_key(mutate, fragment: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        # a typo in a field name
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(emial="encrypt"), "fields.emial: not a field"),
        # keeping a field the clean schema does not allow would leak it
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(transaction_id="keep", name="keep"),
         None),
        # dropping a field the clean schema requires
        (lambda d: d["event_types"]["payment.transaction"]["fields"].update(amount="drop"), "requires 'amount'"),
        # an input version with no schema
        (lambda d: d["event_types"]["payment.transaction"].update(schema_versions=[1, 2]), "no input schema"),
        # an output type with no schema
        (lambda d: d["event_types"]["payment.transaction"]["output"].update(type="payment.unknown"), "no schema"),
        # a subject field the input does not have
        (lambda d: d["event_types"]["payment.transaction"]["subject"].update(field="client"), "subject.field"),
    ],
)
def test_policy_schema_disagreements_are_start_up_errors(mutate, fragment: str | None) -> None:
    doc = _doc()
    mutate(doc)
    policy = parse_policy(doc)
    if fragment is None:
        # `name: keep` passes shape checks; the clean schema (name must be enc:v1:...) stops it at runtime.
        check_against_schemas(policy, REG)
        return
    with pytest.raises(PolicyError) as info:
        check_against_schemas(policy, REG)
    assert fragment in info.value.message


def test_policy_file_errors_say_which_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nevent_types: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML at line"):
        load_policy(bad, REG)
    with pytest.raises(PolicyError, match="BULWARK_ANONYMIZER_POLICY"):
        load_policy(tmp_path / "missing.yaml", REG)


@pytest.mark.parametrize(
    ("value", "keep", "expected"),
    [
        ("4111-1111-1111-1234", 4, "****-****-****-1234"),  # separators stay, last four digits kept
        ("+86 138 0013 8000", 2, "+** *** **** **00"),
        ("ab", 4, "ab"),  # shorter than keep_last: nothing to hide
        (123456, 2, "****56"),  # numbers are masked as text
    ],
)
def test_mask_keeps_last_n_letters_and_digits(value, keep: int, expected: str) -> None:
    assert _mask(keep, "*")(value, "s", Counter(), {}) == expected


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (dict(bucket=100), 1234.5, 1200),
        (dict(bucket=10), 57, 50),
        (dict(date="year"), "1987-06-05", "1987"),
        (dict(date="month"), "1987-06-05", "1987-06"),
        (dict(ipv4_prefix=24, ipv6_prefix=48), "203.0.113.77", "203.0.113.0/24"),
        (dict(ipv4_prefix=24, ipv6_prefix=48), "2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
    ],
)
def test_generalize_coarsens_values(rule: dict, value, expected) -> None:
    op = _generalize("f", GeneralizeRule(action="generalize", **rule))
    assert op(value, "s", Counter(), {}) == expected


def test_generalize_without_a_form_for_the_ip_version_drops_it() -> None:
    op = _generalize("ip", GeneralizeRule(action="generalize", ipv4_prefix=24))
    assert op("2001:db8::1", "s", Counter(), {}) is DROP


@pytest.mark.parametrize(("rule", "value"), [(dict(bucket=10), "12"), (dict(date="year"), "yesterday"),
                                              (dict(ipv4_prefix=24), "not-an-ip")])
def test_generalize_bad_value_error_names_field_not_value(rule: dict, value) -> None:
    from bulwark.errors import BulwarkError

    op = _generalize("birth_date", GeneralizeRule(action="generalize", **rule))
    with pytest.raises(BulwarkError) as info:
        op(value, "s", Counter(), {})
    assert "payload.birth_date" in info.value.message and str(value) not in info.value.message


class _NoSubjects:
    def encrypt(self, subject, event_type, field, raw):  # noqa: ANN001, ANN201
        return "enc:v1:subject:sealed"


def _plan(fields: dict, default: str = "drop") -> EventPlan:
    doc = _doc()
    doc["event_types"]["payment.transaction"]["fields"] = fields
    doc["event_types"]["payment.transaction"]["default_action"] = default
    policy = parse_policy(doc)
    kit = OperatorKit(Pseudonymizer(KeyRing.generate("pseudonym")), _NoSubjects(), TextScanner(BUILTIN_RECOGNIZERS))
    return EventPlan("payment.transaction", policy.event_types["payment.transaction"], kit, policy.version)


def test_unknown_fields_are_dropped_and_counted_never_named() -> None:
    plan = _plan({"amount": "keep"})
    out = plan.apply({"amount": 3.0, "alice@example.com": "x", "shadow_field": 1}, "tok_s")
    assert out == {"amount": 3.0, "anonymization": {"policy_version": 1, "dropped": 2, "unknown": 2, "findings": {}}}


def test_text_rule_replaces_findings_with_stable_tokens() -> None:
    plan = _plan({"note": {"action": "text", "replace": "token"}})
    a = plan.apply({"note": "call +86 138 0013 8000 or mail bob@example.com"}, "s")
    b = plan.apply({"note": "number 13800138000 again"}, "s")
    # The tokens are keyed hashes in base32, which may spell "bob" or "138" by chance: look between them.
    clear = re.sub(r"<[A-Z_]+:[^>]*>", "<>", a["note"])
    assert clear == "call <> or mail <>"
    assert a["anonymization"]["findings"] == {"PHONE": 1, "EMAIL": 1}
    token = a["note"].split("<PHONE:")[1].split(">")[0]
    assert token in b["note"]  # the same phone written two ways is one token


def test_pseudonymize_uses_the_domain_so_the_subject_token_matches_the_key() -> None:
    ring = KeyRing.generate("pseudonym")
    kit = OperatorKit(Pseudonymizer(ring), _NoSubjects(), TextScanner(BUILTIN_RECOGNIZERS))
    doc = _doc()
    policy = parse_policy(doc)
    plan = EventPlan("payment.transaction", policy.event_types["payment.transaction"], kit, 1)
    subject = Pseudonymizer(ring).token("C1", domain="subject")
    assert plan._ops["customer_id"]("C1", subject, Counter(), {}) == subject


def test_text_rule_removes_the_events_own_values_no_pattern_can_find() -> None:
    plan = _plan({"note": {"action": "text", "known": ["name", "customer_id"]}})
    out = plan.apply({"note": "Ms Müller (Anna Müller, C00042) called; 张伟 too. annals unaffected",
                      "name": "Anna Müller", "customer_id": "C00042"}, "s")
    assert out["note"] == "Ms <NAME> (<NAME>, <CUSTOMER_ID>) called; 张伟 too. annals unaffected"
    cn = plan.apply({"note": "请联系张伟先生", "name": "张伟", "customer_id": "C1"}, "s")
    assert cn["note"] == "请联系<NAME>先生"
    assert cn["anonymization"]["findings"] == {"NAME": 1}


def test_the_ipv4_fast_path_writes_exactly_what_ipaddress_writes() -> None:
    import ipaddress
    import random

    from services.ingest_anonymizer.operators import ipv4_network

    rng = random.Random(7)
    samples = [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(2000)]
    samples += ["0.0.0.0", "255.255.255.255", "10.0.0.1"]
    for text in samples:
        for prefix in (0, 8, 16, 24, 31, 32):
            assert ipv4_network(text, prefix) == str(ipaddress.ip_network(f"{text}/{prefix}", strict=False))
    # Forms it leaves to ipaddress (which refuses or reads them its own way).
    for odd in ("010.1.1.1", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.x", "１.2.3.4", "::1", "", "1..2.3"):
        assert ipv4_network(odd, 24) is None


def test_ip_generalization_matches_ipaddress_networks_for_both_versions() -> None:
    import ipaddress
    import random
    from collections import Counter

    from services.ingest_anonymizer.operators import _generalize
    from services.ingest_anonymizer.policy import GeneralizeRule

    rng = random.Random(11)
    v6 = [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(500)] + ["::1", "::", "2001:db8::1",
                                                                                  "::ffff:1.2.3.4", "fe80::1"]
    v4 = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(500)]
    for p4, p6 in ((24, 48), (0, 0), (32, 128), (8, 64)):
        op = _generalize("ip", GeneralizeRule(action="generalize", ipv4_prefix=p4, ipv6_prefix=p6))
        for text, prefix in [*((a, p4) for a in v4), *((a, p6) for a in v6)]:
            expected = str(ipaddress.ip_network(f"{ipaddress.ip_address(text)}/{prefix}", strict=False))
            assert op(text, "", Counter(), {}) == expected, (text, prefix)
