"""Pure checksum and structure validators for candidate values a regex has found.

Each validator takes the matched substring (separators included, as it appears in the text) and returns
whether it is a plausible value of its kind. A policy names a validator by its key in `VALIDATORS`.
Validators never raise on bad input and never echo the value anywhere.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import operator
from types import MappingProxyType
from typing import Callable, Mapping

Validator = Callable[[str], bool]

# Doubling digit d in the Luhn sum adds the digit sum of 2·d; this maps the ASCII digit d to the ASCII
# digit of that sum, so both halves of the sum are plain byte sums (fast, in C).
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")
_SEPARATORS = str.maketrans("", "", " -")
_IBAN_LETTERS = {ord(c): str(v) for v, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", start=10)}

# GB 11643-1999: weight of position i (0-based, left to right) is 2^(17-i) mod 11; the remainder of the
# weighted sum indexes the check character.
_CN_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
# The weighted sum runs over ASCII codes; this removes the '0' offset in one subtraction.
_CN_ID_OFFSET = 48 * sum(_CN_ID_WEIGHTS)
_CN_ID_CHECK = "10X98765432"
# GB/T 2260 province-level codes (first two digits); 71/81/82/83 are Taiwan, Hong Kong and Macau
# (residence permits use them).
_CN_PROVINCES = frozenset(
    (11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54,
     61, 62, 63, 64, 65, 71, 81, 82, 83))
_CN_EARLIEST_YEAR = 1900
# Years before the one at import time are in the past for the life of the process; only later ones need
# today's date (a call that costs more than the rest of the check).
_YEAR_AT_IMPORT = dt.date.today().year

# ISO 13616 registry: total IBAN length per country code.
IBAN_LENGTHS: Mapping[str, int] = MappingProxyType({
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
})


def luhn(value: str) -> bool:
    """Luhn (ISO/IEC 7812-1 mod 10) checksum over the digits of `value`; spaces and dashes are ignored."""
    digits = value.translate(_SEPARATORS)
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    data = digits.encode()
    total = sum(data[-1::-2]) + sum(data[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(data)
    return total % 10 == 0


def card_number(value: str) -> bool:
    """A payment card number: 13-19 digits passing Luhn, that is not structurally a Chinese resident ID.

    An 18-digit string with a resident ID's region and birth date but a wrong check character is a mistyped
    ID; a real 18-digit card carrying a valid YYYYMMDD at positions 7-14 is vanishingly rare. 15-digit
    cards are Amex (IIN 34/37), so a 15-digit number with another prefix and the structure of an old
    resident ID is that ID. Such strings are not reported as cards.
    """
    digits = value.translate(_SEPARATORS)
    if not 13 <= len(digits) <= 19 or not luhn(digits):
        return False
    if len(digits) == 18:
        return not _cn_id_structure(digits, digits[6:14])
    if len(digits) == 15 and not digits.startswith(("34", "37")):
        return not _cn_id_structure(digits, "19" + digits[6:12])
    return True


def _cn_id_structure(value: str, yyyymmdd: str) -> bool:
    """Plausible GB/T 2260 region and birth date.

    The region needs a known province code and, except for Taiwan/Hong Kong/Macau (whose residence
    permits use 710000/810000/820000/830000), a non-zero prefecture/county part.
    """
    province = int(value[:2])
    if province not in _CN_PROVINCES or (value[2:6] == "0000" and province < 71):
        return False
    year = int(yyyymmdd[:4])
    if year < _CN_EARLIEST_YEAR:
        return False
    try:
        born = dt.date(year, int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return year < _YEAR_AT_IMPORT or born <= dt.date.today()


def cn_resident_id(value: str) -> bool:
    """A Chinese resident identity number (GB 11643-1999).

    18 characters: 6-digit region, YYYYMMDD birth date, 3-digit sequence, and a check character (0-9 or X)
    computed with ISO 7064 MOD 11-2. The old 15-digit form (region, YYMMDD in the 1900s, sequence) has no
    check character, so only its region and date are checked.
    """
    if len(value) == 18:
        body, check = value[:17], value[17].upper()
        if not (body.isascii() and body.isdigit()):
            return False
        weighted = sum(map(operator.mul, body.encode(), _CN_ID_WEIGHTS)) - _CN_ID_OFFSET
        if _CN_ID_CHECK[weighted % 11] != check:
            return False
        return _cn_id_structure(body, body[6:14])
    if len(value) == 15 and value.isascii() and value.isdigit():
        return _cn_id_structure(value, "19" + value[6:12])
    return False


def iban(value: str) -> bool:
    """An IBAN (ISO 13616): registered country code, the country's length, and mod 97 (ISO 7064) equal to 1.

    Spaces are ignored. The check moves the first four characters to the end, maps letters to 10..35
    and takes the resulting integer mod 97.
    """
    compact = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not (compact.isascii() and compact.isalnum()):
        return False
    if not compact[2:4].isdigit():
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1


def ip_address(value: str) -> bool:
    """An IPv4 or IPv6 address as the standard library's `ipaddress` parses it (no leading zeros in IPv4)."""
    try:
        # The family is known from the text; ip_address() would try IPv4 first and pay for an exception.
        if ":" in value:
            ipaddress.IPv6Address(value)
        else:
            ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def phone_number(value: str) -> bool:
    """An international number: after the '+' or '00' prefix, 8 to 15 digits (ITU-T E.164 allows 15)."""
    digits = sum(map(str.isdigit, value))
    if value.startswith("00"):
        digits -= 2
    return 8 <= digits <= 15


VALIDATORS: Mapping[str, Validator] = MappingProxyType({
    "luhn": luhn,
    "card_number": card_number,
    "cn_resident_id": cn_resident_id,
    "iban": iban,
    "ip_address": ip_address,
    "phone_number": phone_number,
})


def get_validator(name: str) -> Validator:
    """The validator registered as `name`; an unknown name raises `ValueError` listing the valid ones."""
    try:
        return VALIDATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown validator {name!r}; valid: {', '.join(sorted(VALIDATORS))}") from None
