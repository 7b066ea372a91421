"""The reference use case: payment-transaction events with personal data and a known truth.

A producer publishes `payment.transaction` events. Each carries personal fields (name, email, phone, card
number, Chinese resident ID, IP address, birth date, a free-text note that may repeat any of them) and
numeric/categorical features. Part of them carry a fraud label drawn from a known ground-truth function
of three features, so accuracy and explanations can be checked against truth:

    logit = 1.5·(ln amount − 3.6) + 1.2·(ln(1 + distance_from_home_km) − 2.2)
            − 1.0·(ln(1 + account_age_days) − 5.4) − 1.9
    P(fraud) = sigmoid(logit)

Every other feature is noise. `bayes_accuracy()` is the best accuracy any model can reach on this data.
Customers repeat (a pool of subjects), so per-customer pseudonymous tokens are meaningful features.
`DriftSpec` shifts a feature's distribution, for the drift detector's tests.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from bulwark.events import Envelope

EVENT_TYPE = "payment.transaction"
SOURCE = "reference-producer"

# The ground truth: these three fields, with these weights on these transforms.
INFLUENTIAL = ("amount", "distance_from_home_km", "account_age_days")
_W_AMOUNT, _C_AMOUNT = 1.5, 3.6
_W_DIST, _C_DIST = 1.2, 2.2
_W_AGE, _C_AGE = -1.0, 5.4
_BIAS = -1.9

NUMERIC_FIELDS = ("amount", "avg_amount_30d", "distance_from_home_km", "account_age_days", "txn_count_24h",
                  "hour_of_day")
CATEGORICAL_FIELDS = ("currency", "merchant_category", "country")
FLAG_FIELDS = ("card_present", "device_new")
PERSONAL_FIELDS = ("customer_id", "name", "email", "phone", "card_number", "national_id", "ip_address",
                   "birth_date", "note")
LABEL_FIELD = "is_fraud"

CURRENCIES = ("EUR", "USD", "CNY")
MERCHANTS = ("grocery", "electronics", "travel", "fashion", "restaurants", "gaming", "pharmacy", "fuel")
COUNTRIES = ("DE", "FR", "GB", "US", "CN", "NL")

_FIRST = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Lena", "Marco",
          "Nora", "Oscar", "Paula", "Rafael", "Sofia", "Tim", "Ursula", "Viktor")
_LAST = ("Müller", "Schmidt", "Dubois", "Martin", "Smith", "Jones", "Rossi", "García", "Jansen", "Novak",
         "O'Brien", "Kowalski", "Larsen", "Silva", "Weber", "Fischer")
_CN_NAMES = ("张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强")
_DOMAINS = ("example.com", "mail.example.org", "post.example.net", "corp.example.de", "example.cn")
_CN_REGIONS = ("110101", "310104", "440305", "330106", "510107", "320102")
_CN_MOBILE_PREFIX = ("130", "135", "138", "139", "150", "158", "186", "188", "199")
_IBAN_COUNTRIES = {"DE": 18, "FR": 23, "GB": 18, "NL": 14}

_LEGIT_NOTES = ("monthly groceries", "dinner with friends", "train tickets", "new headphones",
                "birthday present", "fuel on the way home", "pharmacy refill", "weekend trip booking",
                "家庭日常采购", "和朋友吃饭")
_FRAUD_NOTES = ("urgent wire transfer requested", "gift cards bought in bulk", "account locked, verify now",
                "crypto purchase, customer unreachable", "multiple declined attempts before success",
                "紧急转账请求", "大量购买礼品卡")
_PII_NOTE_TEMPLATES = (
    "customer asked to be called back on {phone}",
    "receipt sent to {email}",
    "refund to card {card}",
    "login from {ip} flagged by the bank",
    "客户要求回电 {phone}",
    "身份证号 {national_id} 已核实",
    "please contact {name} at {email} about the dispute",
    "transfer to IBAN {iban} was requested",
)


# ---------------------------------------------------------------------------------------------- truth
def sigmoid(x: float) -> float:
    """The logistic function."""
    return 1.0 / (1.0 + math.exp(-x))


def truth_terms(amount: float, distance_km: float, age_days: float) -> dict[str, float]:
    """Each influential field's additive term in the ground-truth logit (the bias is separate)."""
    return {
        "amount": _W_AMOUNT * (math.log(max(amount, 1e-6)) - _C_AMOUNT),
        "distance_from_home_km": _W_DIST * (math.log1p(distance_km) - _C_DIST),
        "account_age_days": _W_AGE * (math.log1p(age_days) - _C_AGE),
    }


def truth_logit(payload: dict[str, Any]) -> float:
    """Ground-truth fraud logit of an event payload."""
    terms = truth_terms(payload["amount"], payload["distance_from_home_km"], payload["account_age_days"])
    return _BIAS + sum(terms.values())


def truth_probability(payload: dict[str, Any]) -> float:
    """Ground-truth probability that the transaction is fraud."""
    return sigmoid(truth_logit(payload))


def truth_contributions(payload: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Exact attribution of the truth logit between `baseline` and `payload`, per field.

    The truth is additive in the fields, so each field's contribution is its term's difference; every
    non-influential field contributes exactly zero.
    """
    now = truth_terms(payload["amount"], payload["distance_from_home_km"], payload["account_age_days"])
    base = truth_terms(baseline["amount"], baseline["distance_from_home_km"], baseline["account_age_days"])
    return {k: now[k] - base[k] for k in now}


# ---------------------------------------------------------------------------------------------- PII
def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit that makes `digits + d` valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 12:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"


def cn_id_check_char(first17: str) -> str:
    """Check character of an 18-digit Chinese resident ID (GB 11643-1999, ISO 7064 MOD 11-2)."""
    return _CN_ID_CHECK[sum(int(c) * w for c, w in zip(first17, _CN_ID_WEIGHTS)) % 11]


def iban_check_digits(country: str, bban: str) -> str:
    """The two IBAN check digits for `country` + `bban` (ISO 13616, mod 97)."""
    rearranged = bban + country + "00"
    num = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{98 - num % 97:02d}"


class PIIFactory:
    """Random but valid personal values in the varied formats real producers send."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def _choice(self, seq: tuple[str, ...]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def _digits(self, n: int) -> str:
        return "".join(str(d) for d in self.rng.integers(0, 10, n))

    def name(self) -> str:
        """A Western or Chinese full name."""
        if self.rng.random() < 0.25:
            return self._choice(_CN_NAMES)
        return f"{self._choice(_FIRST)} {self._choice(_LAST)}"

    def email(self, name: str | None = None) -> str:
        """An email address, sometimes with dots, plus-tags, digits or upper case."""
        base = (name or self.name()).split(" ")[0].lower()
        base = "".join(c for c in base if c.isascii() and c.isalnum()) or "user"
        local = self._choice((f"{base}.{self._choice(_LAST).lower()}", f"{base}{int(self.rng.integers(1, 999))}",
                              f"{base}+shop", f"{base}_{self._digits(2)}", base.upper()))
        local = "".join(c for c in local if c.isascii() and (c.isalnum() or c in "._+"))
        return f"{local}@{self._choice(_DOMAINS)}"

    def cn_mobile(self, formatted: bool = True) -> str:
        """A Chinese mobile number, bare, with +86, or with spaces or dashes."""
        num = self._choice(_CN_MOBILE_PREFIX) + self._digits(8)
        if not formatted:
            return num
        style = int(self.rng.integers(4))
        if style == 0:
            return num
        if style == 1:
            return f"+86 {num[:3]} {num[3:7]} {num[7:]}"
        if style == 2:
            return f"{num[:3]}-{num[3:7]}-{num[7:]}"
        return f"+86{num}"

    def phone(self) -> str:
        """An international phone number in one of several notations."""
        style = int(self.rng.integers(6))
        if style == 0:
            return self.cn_mobile()
        if style == 1:
            return f"+44 20 {self._digits(4)} {self._digits(4)}"
        if style == 2:
            return f"+1 ({int(self.rng.integers(201, 989))}) {self._digits(3)}-{self._digits(4)}"
        if style == 3:
            return f"+49 30 {self._digits(8)}"
        if style == 4:
            return f"+33 6 {self._digits(2)} {self._digits(2)} {self._digits(2)} {self._digits(2)}"
        return f"+31{self._digits(9)}"

    def card_number(self) -> str:
        """A Luhn-valid card number, bare, or grouped by spaces or dashes."""
        prefix = self._choice(("4", "51", "52", "53", "37", "62"))
        length = 15 if prefix == "37" else 16
        body = prefix + self._digits(length - len(prefix) - 1)
        num = body + luhn_check_digit(body)
        style = int(self.rng.integers(3))
        if style == 0:
            return num
        sep = " " if style == 1 else "-"
        if length == 15:
            return sep.join((num[:4], num[4:10], num[10:]))
        return sep.join(num[i:i + 4] for i in range(0, 16, 4))

    def national_id(self, birth: dt.date | None = None) -> str:
        """A Chinese resident ID: 18 digits with its check character, or (1 in 8) the old 15-digit form."""
        birth = birth or self.birth_date()
        region = self._choice(_CN_REGIONS)
        seq = self._digits(3)
        if self.rng.random() < 0.125:
            return f"{region}{birth:%y%m%d}{seq}"
        first17 = f"{region}{birth:%Y%m%d}{seq}"
        return first17 + cn_id_check_char(first17)

    def birth_date(self) -> dt.date:
        """A birth date of an adult."""
        return dt.date(1950, 1, 1) + dt.timedelta(days=int(self.rng.integers(0, 365 * 55)))

    def ip_address(self) -> str:
        """An IPv4 address, or (1 in 4) an IPv6 address, full or compressed."""
        if self.rng.random() < 0.25:
            groups = [f"{int(g):x}" for g in self.rng.integers(0, 65536, 8)]
            if self.rng.random() < 0.5:
                return "2001:db8::" + ":".join(groups[5:])
            return ":".join(groups)
        return ".".join(str(int(o)) for o in self.rng.integers(1, 255, 4))

    def iban(self) -> str:
        """A valid IBAN, grouped by fours or bare."""
        country = self._choice(tuple(_IBAN_COUNTRIES))
        if country == "GB":
            bban = "NWBK" + self._digits(14)
        elif country == "NL":
            bban = "ABNA" + self._digits(10)
        else:
            bban = self._digits(_IBAN_COUNTRIES[country])
        iban = country + iban_check_digits(country, bban) + bban
        if self.rng.random() < 0.5:
            return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        return iban


# ---------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Customer:
    """A subject: the personal values that stay fixed across their transactions."""

    customer_id: str
    name: str
    email: str
    phone: str
    card_number: str
    national_id: str
    birth_date: str
    home_country: str
    account_age_days: int


@dataclass(frozen=True)
class DriftSpec:
    """A shift of the feature distribution: multiply `amount` and `distance_from_home_km` by factors,
    and move the share of new devices; the identity spec changes nothing."""

    amount_factor: float = 1.0
    distance_factor: float = 1.0
    device_new_share: float | None = None


@dataclass
class ReferenceGenerator:
    """Generates reference events; the same seed gives the same events, ids included."""

    seed: int | None = None
    customers: int = 2000
    labeled_fraction: float = 0.7
    pii_note_fraction: float = 0.35
    drift: DriftSpec = field(default_factory=DriftSpec)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.pii = PIIFactory(self.rng)
        self._pool = [self._customer(i) for i in range(self.customers)]

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self.rng.bytes(16), version=4))

    def _customer(self, i: int) -> Customer:
        name = self.pii.name()
        birth = self.pii.birth_date()
        new_account = self.rng.random() < 0.2
        age = int(self.rng.uniform(0, 60)) if new_account else int(self.rng.uniform(180, 3650))
        return Customer(
            customer_id=f"C{i:07d}-{self.rng.integers(1000, 9999)}", name=name, email=self.pii.email(name),
            phone=self.pii.phone(), card_number=self.pii.card_number(), national_id=self.pii.national_id(birth),
            birth_date=birth.isoformat(), home_country=COUNTRIES[int(self.rng.integers(len(COUNTRIES)))],
            account_age_days=age,
        )

    def payload(self) -> dict[str, Any]:
        """One transaction payload (the label drawn from the truth, present on part of them)."""
        rng, d = self.rng, self.drift
        c = self._pool[int(rng.integers(len(self._pool)))]
        amount = round(float(rng.lognormal(3.6, 1.0)) * d.amount_factor, 2)
        far = rng.random() < 0.2
        distance = float(rng.lognormal(5.0, 1.0) if far else rng.lognormal(1.2, 0.9)) * d.distance_factor
        share_new = 0.15 if d.device_new_share is None else d.device_new_share
        p: dict[str, Any] = {
            "transaction_id": self._uuid(),
            "customer_id": c.customer_id,
            "name": c.name,
            "email": c.email,
            "phone": c.phone,
            "card_number": c.card_number,
            "national_id": c.national_id,
            "ip_address": self.pii.ip_address(),
            "birth_date": c.birth_date,
            "amount": amount,
            "currency": CURRENCIES[int(rng.integers(len(CURRENCIES)))],
            "merchant_category": MERCHANTS[int(rng.integers(len(MERCHANTS)))],
            "country": c.home_country if rng.random() < 0.85 else COUNTRIES[int(rng.integers(len(COUNTRIES)))],
            "hour_of_day": int(rng.integers(0, 24)),
            "account_age_days": c.account_age_days,
            "txn_count_24h": int(rng.poisson(3)),
            "avg_amount_30d": round(float(rng.lognormal(3.6, 0.6)), 2),
            "distance_from_home_km": round(distance, 3),
            "card_present": bool(rng.random() < 0.6),
            "device_new": bool(rng.random() < share_new),
        }
        fraud = bool(rng.random() < truth_probability(p))
        p["note"] = self._note(c, fraud)
        if rng.random() < self.labeled_fraction:
            p[LABEL_FIELD] = fraud
        return p

    def _note(self, c: Customer, fraud: bool) -> str:
        rng = self.rng
        # The text family learns from notes: fraud notes use fraud phrasing more often (not always).
        pool = _FRAUD_NOTES if (fraud and rng.random() < 0.7) or (not fraud and rng.random() < 0.05) else _LEGIT_NOTES
        text = pool[int(rng.integers(len(pool)))]
        if rng.random() < self.pii_note_fraction:
            tmpl = _PII_NOTE_TEMPLATES[int(rng.integers(len(_PII_NOTE_TEMPLATES)))]
            pii = tmpl.format(phone=c.phone, email=c.email, card=c.card_number, ip=self.pii.ip_address(),
                              national_id=c.national_id, name=c.name, iban=self.pii.iban())
            text = f"{text}; {pii}" if rng.random() < 0.5 else f"{pii}. {text}"
        return text

    def event(self) -> Envelope:
        """One raw event, keyed by its customer (the subject)."""
        p = self.payload()
        return Envelope(type=EVENT_TYPE, payload=p, source=SOURCE, subject=p["customer_id"], id=self._uuid())

    def events(self, n: int) -> Iterator[Envelope]:
        """`n` raw events."""
        for _ in range(n):
            yield self.event()


def bayes_accuracy(n: int = 200_000, seed: int = 7) -> float:
    """The best accuracy any classifier can reach on the reference labels (Monte Carlo estimate)."""
    gen = ReferenceGenerator(seed=seed, customers=5000, pii_note_fraction=0.0)
    total = 0.0
    for _ in range(n):
        prob = truth_probability(gen.payload())
        total += max(prob, 1 - prob)
    return total / n
