"""A labeled corpus of payment notes with planted personal values, and precision/recall against it.

Texts are English or Chinese, built from fragments: values inside entity templates (with their context
words) or bare/generic ones, at the start, middle or end, glued to punctuation or, in Chinese, to the
characters around them; several values per text or none; and unlabeled hard negatives (Luhn-failing order
numbers, amounts, dates, times, versions, UUIDs, hashes, postcodes, resident IDs with a wrong check
character). Values come from `bulwark.reference.PIIFactory` and from extra formats drawn here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bulwark.reference import PIIFactory, cn_id_check_char, iban_check_digits, luhn_check_digit, luhn_valid

from .spans import Span
from .validators import cn_resident_id

ENTITIES = ("EMAIL", "PHONE", "CREDIT_CARD", "CN_RESIDENT_ID", "IBAN", "IP_ADDRESS")
MIN_OVERLAP = 0.8

_FIRST = ("anna", "ben", "clara", "david", "emma", "felix", "li", "wei", "jonas", "sofia", "tim", "xiao")
_LAST = ("mueller", "smith", "dubois", "rossi", "jansen", "novak", "obrien", "zhang", "wang", "chen")
_EMAIL_DOMAINS = ("example.com", "mail.example.co.uk", "eu.corp.example.de", "my-shop.example.net",
                  "EXAMPLE.ORG", "example.cn", "student.uni-example.edu", "x2.example.io")
_CN_MOBILE_PREFIX = ("130", "133", "138", "147", "150", "159", "166", "177", "186", "189", "191", "199")
_CN_REGIONS = ("110101", "310104", "440305", "370102", "340104", "210102", "500101", "650102", "420106",
               "610113", "130102", "810000")
# BBAN layout: optional leading letters ("a<count>"), then digits ("n<count>").
_IBAN_BBAN = {"FR": "n23", "ES": "n20", "IT": "a1n22", "BE": "n12", "CH": "n17", "AT": "n16",
              "PL": "n24", "NO": "n11"}

_EN_TEMPLATES = {
    "EMAIL": ("receipt sent to {v}", "{v} asked for a refund", "customer email: {v}.",
              "reply to <{v}> please", "mail from {v} about the dispute"),
    "PHONE": ("customer asked to be called back on {v}", "call {v} after 6pm", "tel. {v}",
              "({v}) left a voicemail", "{v} is the new mobile number"),
    "CREDIT_CARD": ("refund to card {v}", "card {v} declined twice", "charged on {v}.",
                    "{v} was reported stolen", "card no. {v}"),
    "CN_RESIDENT_ID": ("resident ID {v} verified", "ID card no. {v}", "{v} is the holder's identity number",
                       "identity: {v}."),
    "IBAN": ("transfer to IBAN {v} was requested", "pay out to {v}", "account {v} closed",
             "{v} (beneficiary)"),
    "IP_ADDRESS": ("login from {v} flagged by the bank", "IP {v}: too many attempts", "session via {v}",
                   "[{v}] new device"),
}
_CN_TEMPLATES = {
    "EMAIL": ("客户邮箱{v}已验证", "请发邮件至{v}。", "邮箱：{v}", "已将收据发送到{v}"),
    "PHONE": ("请联系{v}谢谢", "客户要求回电{v}", "手机号{v}，下午联系", "电话：{v}。"),
    "CREDIT_CARD": ("退款到卡号{v}", "信用卡{v}被拒绝", "卡号：{v}已冻结"),
    "CN_RESIDENT_ID": ("身份证号{v}已核实", "证件号码：{v}", "客户身份证{v}与姓名一致"),
    "IBAN": ("转账至账户{v}", "收款账号：{v}。", "IBAN：{v}已确认"),
    "IP_ADDRESS": ("登录IP{v}异常", "来自{v}的登录", "地址{v}多次尝试失败"),
}
_EN_GENERIC = ("see {v}", "value {v} on file", "{v}", '"{v}"', "re: {v}!", "noted: {v}.")
_CN_GENERIC = ("备注：{v}。", "{v}", "见{v}", "（{v}）")
_EN_PLAIN = ("monthly groceries", "dinner with friends", "train tickets", "urgent wire transfer requested",
             "gift cards bought in bulk", "account locked, verify now", "weekend trip booking")
_CN_PLAIN = ("家庭日常采购", "和朋友吃饭", "紧急转账请求", "大量购买礼品卡", "周末旅行预订")
_EN_SEPARATORS = (", ", "; ", ". ", " and ", " / ", " - ", ";")
_CN_SEPARATORS = ("，", "；", "。", "、", "")


@dataclass(frozen=True)
class LabeledText:
    """A text and the spans of the personal values planted in it (score 1.0)."""

    text: str
    spans: list[Span]


class _ValueFactory:
    """Personal values in the reference formats plus extra ones, and hard negatives."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.pii = PIIFactory(rng)

    def pick(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def coin(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def digits(self, n: int) -> str:
        return "".join(str(d) for d in self.rng.integers(0, 10, n))

    def value(self, entity: str) -> str:
        draw = {"EMAIL": self.email, "PHONE": self.phone, "CREDIT_CARD": self.credit_card,
                "CN_RESIDENT_ID": self.cn_resident_id, "IBAN": self.iban, "IP_ADDRESS": self.ip_address}
        return draw[entity]()

    def email(self) -> str:
        if self.coin(0.5):
            return self.pii.email()
        first, last = self.pick(_FIRST), self.pick(_LAST)
        local = self.pick((f"{first}.{last}", f"{first}+{self.pick(('shop', 'news', 'x1'))}",
                           f"{first}_{last}{self.digits(2)}", f"{first[0]}.{last}.{self.digits(4)}",
                           f"{first}-{last}"))
        return f"{local.upper() if self.coin(0.2) else local}@{self.pick(_EMAIL_DOMAINS)}"

    def phone(self) -> str:
        style = int(self.rng.integers(10))
        if style < 4:
            return self.pii.phone()
        m = self.pick(_CN_MOBILE_PREFIX) + self.digits(8)
        d = self.digits
        options = {
            4: (m, m, f"{m[:3]}-{m[3:7]}-{m[7:]}"),
            5: (f"0086 {m[:3]} {m[3:7]} {m[7:]}", f"+86-{m[:3]}-{m[3:7]}-{m[7:]}", f"+86{m}", f"0086{m}"),
            6: (f"0044 20 {d(4)} {d(4)}", f"0049 30 {d(8)}", f"0033 6 {d(2)} {d(2)} {d(2)} {d(2)}",
                f"0031 6{d(8)}"),
            7: (f"+1 {int(self.rng.integers(201, 989))} {d(3)} {d(4)}",
                f"+1-{int(self.rng.integers(201, 989))}-{d(3)}-{d(4)}",
                f"+1.{int(self.rng.integers(201, 989))}.{d(3)}.{d(4)}"),
            8: (f"+44 7{d(3)} {d(6)}", f"+49 (0)30 {d(8)}", f"+49 151 {d(8)}", f"+39 06 {d(4)} {d(4)}"),
            9: (f"+81 3-{d(4)}-{d(4)}", f"+61 4{d(2)} {d(3)} {d(3)}", f"+852 {d(4)} {d(4)}"),
        }
        return self.pick(options[style])

    def credit_card(self) -> str:
        style = int(self.rng.integers(8))
        if style < 4:
            return self.pii.card_number()
        prefix, length, groups = {
            4: (self.pick(("34", "37")), 15, (4, 6, 5)),
            5: (self.pick(("36", "38")), 14, (4, 6, 4)),
            6: ("62", 19, (4, 4, 4, 4, 3)),
            7: (self.pick(("4", "6011")), self.pick((13, 16)), (4, 4, 4, 4)),
        }[style]
        body = prefix + self.digits(length - len(prefix) - 1)
        number = body + luhn_check_digit(body)
        sep = self.pick(("", " ", "-"))
        if not sep or sum(groups) != length:
            return number
        cuts = np.cumsum((0,) + groups)
        return sep.join(number[a:b] for a, b in zip(cuts[:-1], cuts[1:]))

    def cn_resident_id(self) -> str:
        if self.coin(0.5):
            return self.pii.national_id()
        region = self.pick(_CN_REGIONS)
        birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(self.rng.integers(0, 365 * 66)))
        if self.coin(0.12) and birth.year < 2000:
            return f"{region}{birth:%y%m%d}{self.digits(3)}"
        want_x = self.coin(0.2)
        for _ in range(60):
            first17 = f"{region}{birth:%Y%m%d}{self.digits(3)}"
            check = cn_id_check_char(first17)
            if check == "X" or not want_x:
                break
        return first17 + (check.lower() if check == "X" and self.coin(0.2) else check)

    def iban(self) -> str:
        if self.coin(0.5):
            return self.pii.iban()
        country = self.pick(tuple(_IBAN_BBAN))
        spec = _IBAN_BBAN[country]
        letters = int(spec[1]) if spec[0] == "a" else 0
        n_digits = int(spec.rsplit("n", 1)[1])
        bban = "".join(self.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
        bban += self.digits(n_digits)
        code = country + iban_check_digits(country, bban) + bban
        return " ".join(code[i:i + 4] for i in range(0, len(code), 4)) if self.coin(0.5) else code

    def ip_address(self) -> str:
        style = int(self.rng.integers(6))
        if style < 3:
            return self.pii.ip_address()
        o, h = self.octet, self.hextet
        if style == 3:
            return self.pick((f"10.0.{o()}.{o(1)}", f"192.168.{o()}.{o(1)}", f"172.16.{o()}.{o()}",
                              f"8.8.{o()}.{o()}"))
        if style == 4:
            return self.pick((f"fe80::{h()}:{h()}:{h()}:{h()}", f"2001:db8:{h()}::{h()}",
                              f"::ffff:{o(1)}.{o()}.{o()}.{o(1)}", f"2a00:1450:{h()}:{h()}::{h()}"))
        full = ":".join(f"{int(g):04x}" for g in self.rng.integers(0, 65536, 8))
        return full.upper() if self.coin(0.3) else full

    def octet(self, low: int = 0) -> int:
        return int(self.rng.integers(low, 256))

    def hextet(self) -> str:
        return f"{int(self.rng.integers(1, 65536)):x}"

    def negative(self, lang: str) -> str:
        """One hard negative: looks like a value but is none."""
        d = self.digits
        kind = int(self.rng.integers(12))
        if kind == 0:
            value = self.order_number()
        elif kind == 1:
            value = self.pick((f"{int(self.rng.integers(1, 99999))}.{d(2)} EUR",
                               f"USD {int(self.rng.integers(1000, 999999)):,}.{d(2)}",
                               f"€{int(self.rng.integers(1, 9999))}.{d(2)}",
                               f"+{int(self.rng.integers(1, 99))}.{d(2)} EUR fee"))
        elif kind == 2:
            day = dt.date(2020, 1, 1) + dt.timedelta(days=int(self.rng.integers(0, 2000)))
            value = self.pick((f"{day:%Y-%m-%d}", f"{day:%d.%m.%Y}", f"{day:%m/%d/%Y}",
                               f"{day:%Y-%m-%d}T1{d(1)}:30:00Z", f"{day.year}年{day.month}月{day.day}日"))
        elif kind == 3:
            value = self.pick((f"{int(self.rng.integers(0, 24)):02d}:{d(1)}5", f"1{d(1)}:30:4{d(1)}"))
        elif kind == 4:
            value = self.pick((f"v{d(1)}.{d(1)}.{d(1)}.{d(1)}", f"{d(1)}.{d(1)}.{d(1)}", f"1{d(1)}.{d(1)}",
                               f"v{d(1)}.1{d(1)}.{d(1)}"))
        elif kind == 5:
            value = self.wrong_resident_id()
        elif kind == 6:
            value = str(uuid.UUID(bytes=self.rng.bytes(16), version=4))
        elif kind == 7:
            value = self.rng.bytes(int(self.pick((16, 20, 32)))).hex()
        elif kind == 8:
            value = self.pick((d(1), d(2), d(3), f"#{d(4)}",
                               f"ORD-{int(self.rng.integers(2019, 2026))}-{d(6)}"))
        elif kind == 9:
            value = str(int(self.rng.integers(1950, 2030)))
        elif kind == 10:
            value = self.pick((f"{d(5)} Berlin", "SW1A 1AA", f"9410{d(1)}-{d(4)}", d(6)))
        else:
            value = self.pick((f"+{d(1)}% vs last month", f"qty {d(2)}", f"room {d(4)}"))
        if lang == "cn":
            template = self.pick(("订单{v}", "交易号{v}", "时间{v}", "参考{v}", "金额{v}", "版本{v}"))
        else:
            template = self.pick(("order {v}", "ref {v}", "on {v}", "see {v}", "at {v}", "id {v}"))
        return template.replace("{v}", value)

    def order_number(self) -> str:
        """13-19 digits that fail Luhn and are not a valid resident ID."""
        while True:
            body = str(int(self.rng.integers(1, 10))) + self.digits(int(self.rng.integers(12, 18)))
            number = body + str((int(luhn_check_digit(body)) + int(self.rng.integers(1, 10))) % 10)
            if not luhn_valid(number) and not cn_resident_id(number):
                return number

    def wrong_resident_id(self) -> str:
        """An 18-character resident ID whose check character is wrong."""
        good = self.pii.national_id()
        while len(good) != 18:
            good = self.pii.national_id()
        return good[:17] + self.pick([c for c in "0123456789X" if c != good[17]])


def generate_corpus(n: int, seed: int) -> list[LabeledText]:
    """`n` labeled texts, the same for the same seed; about 20% carry no value, some only negatives."""
    rng = np.random.default_rng(seed)
    values = _ValueFactory(rng)
    corpus = []
    for _ in range(n):
        lang = "cn" if values.coin(0.45) else "en"
        fragments: list[tuple[str, str | None]] = []
        for _ in range(int(rng.choice(4, p=(0.2, 0.5, 0.22, 0.08)))):
            entity = values.pick(ENTITIES)
            templates = (_CN_TEMPLATES if lang == "cn" else _EN_TEMPLATES)[entity]
            if values.coin(0.3):
                templates = _CN_GENERIC if lang == "cn" else _EN_GENERIC
            fragments.append((values.pick(templates).replace("{v}", "\0" + values.value(entity) + "\0"),
                              entity))
        for _ in range(int(rng.choice(3, p=(0.45, 0.35, 0.2)))):
            fragments.append((values.negative(lang), None))
        if not fragments or values.coin(0.2):
            fragments.append((values.pick(_CN_PLAIN if lang == "cn" else _EN_PLAIN), None))
        order = rng.permutation(len(fragments))
        corpus.append(_assemble([fragments[i] for i in order], lang, values))
    return corpus


def _assemble(fragments: list[tuple[str, str | None]], lang: str, values: _ValueFactory) -> LabeledText:
    """Join fragments; a value is delimited by NUL marks in its fragment, which become the span."""
    text, spans = "", []
    for fragment, entity in fragments:
        if text:
            sep = values.pick(_CN_SEPARATORS if lang == "cn" else _EN_SEPARATORS)
            if not sep and (text[-1].isascii() or fragment[0].isascii()):
                sep = "，"
            text += sep
        if entity is not None:
            before, value, after = fragment.split("\0")
            spans.append(Span(entity, len(text) + len(before), len(text) + len(before) + len(value), 1.0))
            fragment = before + value + after
        text += fragment
    return LabeledText(text, spans)


class SpanScanner(Protocol):
    """Anything with `scan(text) -> list[Span]`: the TextScanner, or an adapter around another engine."""

    def scan(self, text: str) -> list[Span]:
        """Spans of personal values in `text`."""


@dataclass(frozen=True)
class EntityScore:
    """True positives, false positives and false negatives of one entity type (or of all of them)."""

    entity: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when nothing was planted."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass(frozen=True)
class Report:
    """Per-entity and overall precision and recall of a scanner on a corpus."""

    per_entity: dict[str, EntityScore]
    overall: EntityScore
    texts: int

    def table(self) -> str:
        """An aligned text table: entity, planted, predicted, tp, fp, fn, precision, recall."""
        lines = [f"{'entity':<16}{'planted':>8}{'predicted':>10}{'tp':>7}{'fp':>6}{'fn':>6}"
                 f"{'precision':>11}{'recall':>8}"]
        for s in (*self.per_entity.values(), self.overall):
            lines.append(f"{s.entity:<16}{s.tp + s.fn:>8}{s.tp + s.fp:>10}{s.tp:>7}{s.fp:>6}{s.fn:>6}"
                         f"{s.precision:>11.4f}{s.recall:>8.4f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: counts and ratios per entity and overall."""
        def row(s: EntityScore) -> dict[str, Any]:
            return {"tp": s.tp, "fp": s.fp, "fn": s.fn, "precision": s.precision, "recall": s.recall}
        return {"texts": self.texts, "overall": row(self.overall),
                "per_entity": {e: row(s) for e, s in self.per_entity.items()}}


def evaluate(scanner: SpanScanner, corpus: list[LabeledText]) -> Report:
    """Precision and recall of `scanner` on `corpus`.

    A predicted span is a true positive when it has a planted span's entity and overlaps it by at least
    `MIN_OVERLAP` of the planted span's length; each planted span matches at most one prediction.
    """
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    for item in corpus:
        unmatched = list(item.spans)
        for pred in scanner.scan(item.text):
            hit = next((p for p in unmatched if p.entity == pred.entity and
                        min(p.end, pred.end) - max(p.start, pred.start) >= MIN_OVERLAP * (p.end - p.start)),
                       None)
            if hit is None:
                fp[pred.entity] = fp.get(pred.entity, 0) + 1
            else:
                unmatched.remove(hit)
                tp[pred.entity] = tp.get(pred.entity, 0) + 1
        for missed in unmatched:
            fn[missed.entity] = fn.get(missed.entity, 0) + 1
    names = [e for e in ENTITIES if e in tp or e in fp or e in fn]
    names += sorted((set(tp) | set(fp) | set(fn)) - set(names))
    per_entity = {e: EntityScore(e, tp.get(e, 0), fp.get(e, 0), fn.get(e, 0)) for e in names}
    overall = EntityScore("overall", sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return Report(per_entity, overall, len(corpus))
