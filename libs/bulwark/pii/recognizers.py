"""Recognizers: one entity type each, as data (regexes, score, context words, validator, pre-filter).

Regex conventions, all for speed or for text without spaces:
- Boundaries are ASCII-only lookarounds, never `\\b`: CJK characters are word characters, so `\\b` would
  miss "请联系13812345678谢谢".
- Where a pattern can, it starts with a plain character class and puts its left-boundary lookbehind after
  that first character: the regex engine then skips positions by the first character, while a leading
  lookbehind costs a full attempt at every position (several times slower). IBAN and IPv6 cannot, and
  start with a cheap lookahead instead.
- Possessive quantifiers where a value's digit groups cannot usefully be re-split, so a long digit run
  fails in linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .spans import Span
from .validators import IBAN_LENGTHS, VALIDATORS, Validator, get_validator

CONTEXT_BOOST = 0.1
CONTEXT_WINDOW = 32
_ENTITY_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_CONFIG_KEYS = ("entity", "patterns", "context", "validator", "score", "min_digits")

# The shape of a text, for pre-filters: UTF-8 bytes with each ASCII digit as '0', upper-case letter as 'A',
# lower-case letter as 'a', space or dash as '-', '.' kept, anything else (non-ASCII bytes included) '_'.
_SHAPE = bytes(
    ord("0") if chr(b).isdigit() and b < 128 else
    ord("A") if 65 <= b <= 90 else
    ord("a") if 97 <= b <= 122 else
    ord("-") if b in (32, 45) else
    ord(".") if b == 46 else ord("_")
    for b in range(256))


def text_shape(text: str) -> bytes:
    """The text's shape (see `_SHAPE`): one bytes.translate, so shape pre-filters are substring tests."""
    return text.encode().translate(_SHAPE)


@dataclass(frozen=True, slots=True)
class PatternRecognizer:
    """Finds one entity type with regexes, then keeps the candidates its validator accepts.

    Scoring: every accepted candidate gets `score`, raised by `CONTEXT_BOOST` (capped at 1.0) when one of
    the `context` words occurs within `CONTEXT_WINDOW` characters around it. A candidate the validator
    rejects is not consumed: the search resumes one character after its start, so a value right behind
    a rejected look-alike is still found.

    Pre-filter (the scanner applies it before calling `analyze`; each part is a necessary condition for a
    match, checked with one C-level string operation):
    - `min_digits`: the text holds at least this many ASCII digits;
    - `triggers`: when not empty, for at least one `(substring, count)` pair, the text holds `count`
      occurrences of `substring`;
    - `shapes`: when not empty, one of them occurs in `text_shape(text)`, e.g. `b"0" * 17` for a run of
      17 digits.
    """

    entity: str
    patterns: tuple[re.Pattern[str], ...]
    score: float = 0.6
    context: tuple[str, ...] = ()
    validator: Validator | None = None
    min_digits: int = 0
    triggers: tuple[tuple[str, int], ...] = ()
    shapes: tuple[bytes, ...] = ()
    name: str = ""
    _context_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Context words become one alternation, searched in the lower-cased window around a finding. An
        # ASCII word must start a word ("id" in "identity", not in "paid"); its lookbehind sits after the
        # first letter so the regex engine can still skip ahead by first character (a leading lookbehind,
        # or IGNORECASE, makes the search several times slower). CJK words have no spaces around them,
        # so they match anywhere.
        if self.context:
            ordered = sorted((w.lower() for w in self.context), key=len, reverse=True)
            words = "|".join(_context_word(w) for w in ordered)
            object.__setattr__(self, "_context_re", re.compile(words))

    def analyze(self, text: str) -> list[Span]:
        """Spans of this entity in `text`, in pattern order; they may overlap (the scanner resolves)."""
        spans: list[Span] = []
        entity, validator, score = self.entity, self.validator, self._score
        for pattern in self.patterns:
            search, pos = pattern.search, 0
            while (m := search(text, pos)) is not None:
                start, end = m.span()
                if end > start and (validator is None or validator(m.group())):
                    spans.append(Span(entity, start, end, score(text, start, end)))
                    pos = end
                else:
                    pos = start + 1
        return spans

    def _score(self, text: str, start: int, end: int) -> float:
        context_re = self._context_re
        if context_re is not None and context_re.search(
                text[max(0, start - CONTEXT_WINDOW):end + CONTEXT_WINDOW].lower()) is not None:
            return min(1.0, round(self.score + CONTEXT_BOOST, 6))
        return self.score

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PatternRecognizer:
        """A recognizer from policy config.

        Keys: `entity` (upper-case name, required), `patterns` (non-empty list of regexes, required),
        `context` (list of words), `validator` (a name in `VALIDATORS`), `score` (number in (0, 1]),
        `min_digits` (int >= 0, pre-filter); an optional key set to None counts as absent. Any bad or
        unknown key raises `ValueError` naming the key.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"recognizer config must be a mapping, got {type(config).__name__}")
        unknown = sorted(str(k) for k in config if k not in _CONFIG_KEYS)
        if unknown:
            raise ValueError(f"recognizer config: unknown key(s) {unknown}; valid: {list(_CONFIG_KEYS)}")
        for key in ("entity", "patterns"):
            if key not in config:
                raise ValueError(f"recognizer config: missing required key {key!r}")
        entity = config["entity"]
        if not isinstance(entity, str) or not _ENTITY_NAME.fullmatch(entity):
            raise ValueError("recognizer config: key 'entity' must be an upper-case name like EMPLOYEE_ID")
        patterns = _compile_patterns(config["patterns"])
        context = () if config.get("context") is None else config["context"]
        if isinstance(context, str) or not isinstance(context, (list, tuple)) \
                or not all(isinstance(w, str) and w for w in context):
            raise ValueError("recognizer config: key 'context' must be a list of non-empty strings")
        validator = None
        if config.get("validator") is not None:
            if not isinstance(config["validator"], str):
                raise ValueError(f"recognizer config: key 'validator' must be one of {sorted(VALIDATORS)}")
            try:
                validator = get_validator(config["validator"])
            except ValueError as exc:
                raise ValueError(f"recognizer config: key 'validator': {exc}") from None
        score = 0.6 if config.get("score") is None else config["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 < score <= 1.0:
            raise ValueError("recognizer config: key 'score' must be a number in (0, 1]")
        min_digits = 0 if config.get("min_digits") is None else config["min_digits"]
        if isinstance(min_digits, bool) or not isinstance(min_digits, int) or min_digits < 0:
            raise ValueError("recognizer config: key 'min_digits' must be an integer >= 0")
        return cls(entity=entity, patterns=patterns, score=float(score),
                   context=tuple(w.lower() for w in context), validator=validator, min_digits=min_digits,
                   name=entity.lower())


def _context_word(word: str) -> str:
    if not word.isascii():
        return re.escape(word)
    first = re.escape(word[0])
    return f"{first}(?<![a-z]{first}){re.escape(word[1:])}"


def _compile_patterns(raw: Any) -> tuple[re.Pattern[str], ...]:
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError("recognizer config: key 'patterns' must be a non-empty list of regex strings")
    compiled = []
    for i, source in enumerate(raw):
        if not isinstance(source, str) or not source:
            raise ValueError(f"recognizer config: key 'patterns'[{i}] must be a non-empty string")
        try:
            pattern = re.compile(source)
        except re.error as exc:
            raise ValueError(f"recognizer config: key 'patterns'[{i}] is not a valid regex: {exc}") from None
        if pattern.match(""):
            raise ValueError(f"recognizer config: key 'patterns'[{i}] matches the empty string")
        compiled.append(pattern)
    return tuple(compiled)


# ---------------------------------------------------------------------------------------------- built-ins
_NOT_ALNUM_BEFORE = "(?<![0-9A-Za-z]{c})"
_END = r"(?![0-9A-Za-z])"
# "IP" glued to an address ("来自IP192.168.1.1") is common in mixed Chinese/English notes; other letters
# glued in front ("v1.2.3.4", "build1.2.3.4") mark version strings.
_IP_BEFORE = r"(?<![0-9.]{c})(?:(?<![A-Za-z]{c})|(?<=IP{c})|(?<=ip{c}))"

_EMAIL = re.compile(
    r"[A-Za-z0-9](?<![A-Za-z0-9._%+\-][A-Za-z0-9])[A-Za-z0-9._%+\-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])")

# International notation: '+' or '00', a 1-3 digit country code, then up to six digit groups separated by
# one space, dot or dash, a group possibly in parentheses ("(415)", the trunk "(0)"). Length is checked by
# the validator.
_PHONE_INTL = re.compile(
    r"(?:\+(?<![0-9A-Za-z+]\+)|0(?<![0-9A-Za-z]0)0)[1-9][0-9]{0,2}+"
    r"(?:[ .\-]?(?:\([0-9]++\)|[0-9]++)){1,6}+" + _END)
# Chinese mobile: 1[3-9]x then 8 digits, bare or as 3-4-4 with one consistent separator.
_PHONE_CN_MOBILE = re.compile(
    r"1(?<![0-9A-Za-z+]1)[3-9][0-9]([ \-]?)[0-9]{4}\1[0-9]{4}" + _END)

_CARD_BEFORE = r"(?<![0-9A-Za-z+][1-9])(?<![0-9][.,][1-9])"
# Bare 13-19 digits; or 4-4-4-4 (optionally -3, 19 digits); or 4-6-5 (Amex) / 4-6-4 (Diners), with one
# consistent separator. No issuer number starts with 0 (ISO/IEC 7812), and "00..." is a phone prefix.
_CARD = re.compile(
    r"[1-9]" + _CARD_BEFORE +
    r"(?:[0-9]{12,18}|[0-9]{3}([ \-])(?:[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{3})?|[0-9]{6}\1[0-9]{4,5}))"
    r"(?![0-9A-Za-z]|[.,][0-9])")

_MMDD = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_CN_ID_START = "[1-9]" + _NOT_ALNUM_BEFORE.format(c="[1-9]")
_CN_ID_18 = re.compile(_CN_ID_START + r"[0-9]{5}(?:18|19|20)[0-9]{2}" + _MMDD + r"[0-9]{3}[0-9Xx]" + _END)
_CN_ID_15 = re.compile(_CN_ID_START + r"[0-9]{7}" + _MMDD + r"[0-9]{3}" + _END)


def _iban_pattern() -> re.Pattern[str]:
    """One alternative per registered length, so a grouped IBAN never swallows a following token."""
    by_length: dict[int, list[str]] = {}
    for country, length in IBAN_LENGTHS.items():
        by_length.setdefault(length, []).append(country)
    branches = []
    for length, countries in sorted(by_length.items(), reverse=True):
        groups, rest = divmod(length - 4, 4)
        tail = f"(?:[ ]?[A-Z0-9]{{{rest}}})" if rest else ""
        branches.append(f"(?:{'|'.join(sorted(countries))})[0-9]{{2}}(?:[ ]?[A-Z0-9]{{4}}){{{groups}}}{tail}")
    # The leading lookahead rejects most positions before the engine tries the 40-odd branches.
    return re.compile(r"(?=[A-Z]{2}[0-9]{2})(?<![0-9A-Za-z])(?:" + "|".join(branches) + ")" + _END)


_IBAN = _iban_pattern()

_IPV4 = re.compile(
    r"[0-9]" + _IP_BEFORE.format(c="[0-9]") + r"[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![0-9A-Za-z]|\.[0-9])")

_H = "[0-9A-Fa-f]{1,4}"
_V4 = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
# Full (8 groups), embedded IPv4 after '::' (::ffff:192.0.2.1), or compressed with '::' and at least one
# hex digit. The left boundary refuses a start right after "hex:" or "::" (the middle of a longer run);
# a trailing ':' is fine when a space follows ("2001:db8::1: blocked").
_IPV6 = re.compile(
    r"(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)" + _IP_BEFORE.format(c="")
    + r"(?<![0-9A-Fa-f:]:)(?=[:0-9A-Fa-f]*[0-9A-Fa-f])"
    rf"(?:{_H}(?::{_H}){{7}}|(?:{_H}(?::{_H}){{0,5}})?::(?:{_H}:){{0,5}}{_V4}"
    rf"|(?:{_H}(?::{_H}){{0,6}})?::(?:{_H}(?::{_H}){{0,6}})?)"
    r"(?![0-9A-Za-z]|:[0-9A-Za-z:]|\.[0-9])")

_PHONE_CONTEXT = ("phone", "call", "tel", "mobile", "电话", "手机", "联系")

EMAIL_RECOGNIZER = PatternRecognizer(
    "EMAIL", (_EMAIL,), score=0.9, context=("email", "e-mail", "mail", "邮箱", "邮件"), triggers=(("@", 1),),
    name="email")
PHONE_INTL_RECOGNIZER = PatternRecognizer(
    "PHONE", (_PHONE_INTL,), score=0.7, context=_PHONE_CONTEXT,
    validator=VALIDATORS["phone_number"], min_digits=8, triggers=(("+", 1), ("00", 1)), name="phone_intl")
PHONE_CN_MOBILE_RECOGNIZER = PatternRecognizer(
    "PHONE", (_PHONE_CN_MOBILE,), score=0.75, context=_PHONE_CONTEXT,
    min_digits=11, shapes=(b"0" * 11, b"000-0000-0000"), name="phone_cn_mobile")
CREDIT_CARD_RECOGNIZER = PatternRecognizer(
    "CREDIT_CARD", (_CARD,), score=0.9, context=("card", "visa", "mastercard", "amex", "卡"),
    validator=VALIDATORS["card_number"], min_digits=13,
    shapes=(b"0" * 13, b"0000-0000-0000-0000", b"0000-000000-0000"), name="credit_card")
CN_RESIDENT_ID_RECOGNIZER = PatternRecognizer(
    "CN_RESIDENT_ID", (_CN_ID_18,), score=0.95, context=("身份证", "证件", "resident", "identity", "id"),
    validator=VALIDATORS["cn_resident_id"], min_digits=17, shapes=(b"0" * 17,), name="cn_resident_id_18")
# The 15-digit form has no check character: it scores below a Luhn-valid Amex of the same digits (an
# Anhui or Shandong region starts with 34/37), and above it with ID context words near.
CN_RESIDENT_ID_15_RECOGNIZER = PatternRecognizer(
    "CN_RESIDENT_ID", (_CN_ID_15,), score=0.85, context=("身份证", "证件", "resident", "identity", "id"),
    validator=VALIDATORS["cn_resident_id"], min_digits=15, shapes=(b"0" * 15,), name="cn_resident_id_15")
IBAN_RECOGNIZER = PatternRecognizer(
    "IBAN", (_IBAN,), score=0.95, context=("iban", "account", "transfer", "账户", "账号"),
    validator=VALIDATORS["iban"], min_digits=8, shapes=(b"AA00",), name="iban")
IPV4_RECOGNIZER = PatternRecognizer(
    "IP_ADDRESS", (_IPV4,), score=0.8, context=("ip", "login", "address", "登录", "地址"),
    validator=VALIDATORS["ip_address"], min_digits=4, triggers=((".", 3),), shapes=(b"0.0",), name="ipv4")
IPV6_RECOGNIZER = PatternRecognizer(
    "IP_ADDRESS", (_IPV6,), score=0.85, context=("ip", "login", "address", "登录", "地址"),
    validator=VALIDATORS["ip_address"], triggers=(("::", 1), (":", 7)), name="ipv6")

BUILTIN_RECOGNIZERS: tuple[PatternRecognizer, ...] = (
    EMAIL_RECOGNIZER,
    PHONE_INTL_RECOGNIZER,
    PHONE_CN_MOBILE_RECOGNIZER,
    CREDIT_CARD_RECOGNIZER,
    CN_RESIDENT_ID_RECOGNIZER,
    CN_RESIDENT_ID_15_RECOGNIZER,
    IBAN_RECOGNIZER,
    IPV4_RECOGNIZER,
    IPV6_RECOGNIZER,
)
