"""Phone numbers as contacts arrive: normalised to E.164, validated, and placed in a time zone.

phonenumbers does the work. Imports run this for every row, so the common case (a number
already written as +<digits>) skips the general parser, and the per-area-code lookups that do
not depend on the rest of the number are cached. Validity is phonenumbers' own rule
(`is_valid_number_for_region`: the region's general pattern, then any number type's pattern,
each only where its possible lengths allow) with the patterns a region has for a number of that
length joined into one expression, matched once instead of one Python call per type
(tests/test_import_properties.py checks it against phonenumbers on many numbers).
"""

import re
from functools import lru_cache
from typing import Annotated

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat
from phonenumbers.phonenumberutil import REGION_CODE_FOR_NON_GEO_ENTITY, national_significant_number
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX
from pydantic import AfterValidator, WithJsonSchema

_PUNCTUATION = re.compile(r"[\s\-().]")
_PLUS_DIGITS = re.compile(r"^\+[1-9]\d{6,14}$")
_UNKNOWN_ZONE = "Etc/Unknown"


E164_EXAMPLE = "+14155552671"
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def _e164(value: str) -> str:
    if not _E164.match(value):
        raise ValueError(
            f"must be a phone number in E.164 form: '+', country code and number, "
            f"no spaces or dashes, like {E164_EXAMPLE}"
        )
    try:
        valid = phonenumbers.is_valid_number(phonenumbers.parse(value, None))
    except NumberParseException:  # too short for any country, say: not a ValueError, so caught here
        valid = False
    if not valid:
        raise ValueError(f"{value} is not a valid phone number (expected a form like {E164_EXAMPLE})")
    return value


PhoneNumber = Annotated[
    str,
    AfterValidator(_e164),
    WithJsonSchema({"type": "string", "pattern": _E164.pattern, "examples": [E164_EXAMPLE]}),
]
"""An E.164 number in an API request (strict: the API's callers write numbers exactly)."""


class NumberError(ValueError):
    """A phone number that cannot be called, with the reason in words."""


def to_e164(raw: str, default_region: str | None = None) -> str:
    """`raw` as an E.164 number (+14155552671). Numbers without a country code are read as in
    `default_region` (e.g. "US"); without one they are refused."""
    text = raw.strip()
    if not text:
        raise NumberError("no phone number")
    compact = _PUNCTUATION.sub("", text)
    split = _split_plus_digits(compact) if _PLUS_DIGITS.match(compact) else None
    if split is not None:
        if not _valid_digits(*split):
            raise NumberError(f"{raw!r} is not a valid phone number for its country")
        return compact  # exactly these digits: already E.164
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as e:
        if e.error_type == NumberParseException.INVALID_COUNTRY_CODE and not default_region:
            raise NumberError(
                f"{raw!r} has no country code: write it as +<country code><number> "
                f"(like +14155552671) or set the campaign's default_country"
            ) from None
        raise NumberError(f"{raw!r} is not a phone number ({e._msg})") from None
    if not _is_valid(number):
        raise NumberError(f"{raw!r} is not a valid phone number for its country")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _split_plus_digits(compact: str) -> tuple[int, str] | None:
    """+<digits> as (country code, national significant number), or None for the full parser."""
    digits = compact[1:]
    for length in (1, 2, 3):  # country codes are prefix-free
        code = int(digits[:length])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[length:]
            if national.startswith("0"):
                return None  # an Italian-style leading zero: let the full parser handle it
            return code, national
    return None


def _valid_digits(country_code: int, national: str) -> bool:
    """_is_valid for a number given as its digits, without building a PhoneNumber (2.5 µs) where
    the country code alone names the region, as it does for most numbers in a file."""
    if country_code == 1:
        region = _nanp_region(national[:3])
    elif len(regions := phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]) == 1:
        region = regions[0]
    else:
        number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
        region = phonenumbers.region_code_for_number(number)
    return region is not None and _matches(country_code, region, national)


def _is_valid(number: phonenumbers.PhoneNumber) -> bool:
    if number.country_code == 1:  # North America: the area code alone decides the country
        region = _nanp_region(str(number.national_number)[:3])
    else:
        region = phonenumbers.region_code_for_number(number)
    return region is not None and valid_for_region(number, region)


def valid_for_region(number: phonenumbers.PhoneNumber, region: str) -> bool:
    """phonenumbers.is_valid_number_for_region(number, region), with one match per pattern set."""
    if region != REGION_CODE_FOR_NON_GEO_ENTITY and number.country_code != phonenumbers.country_code_for_region(region):
        return False
    return _matches(number.country_code, region, national_significant_number(number))


def _matches(country_code: int, region: str, national: str) -> bool:
    patterns = _validity_patterns(country_code, region, len(national))
    return patterns is not None and bool(patterns[0].fullmatch(national)) and bool(patterns[1].fullmatch(national))


_NUMBER_TYPES = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
    "fixed_line", "mobile",
)


@lru_cache(maxsize=4096)
def _validity_patterns(country_code: int, region: str, length: int) -> tuple[re.Pattern, re.Pattern] | None:
    """The region's general pattern and, joined into one, every number type's pattern that a
    national number of `length` digits may match (None: no number that long is valid there)."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())

    def usable(desc) -> bool:
        return bool(
            desc is not None and desc.national_number_pattern
            and (not desc.possible_length or length in desc.possible_length)
        )

    if metadata is None or not usable(metadata.general_desc):
        return None
    types = [getattr(metadata, name) for name in _NUMBER_TYPES]
    any_type = "|".join(f"(?:{desc.national_number_pattern})" for desc in types if usable(desc))
    if not any_type:
        return None
    return re.compile(metadata.general_desc.national_number_pattern), re.compile(any_type)


@lru_cache(maxsize=2048)
def _nanp_region(area_code: str) -> str | None:
    return phonenumbers.region_code_for_number(phonenumbers.PhoneNumber(country_code=1, national_number=int(area_code + "5550100")))


def time_zone_for(e164: str, fallback: str) -> str:
    """The number's time zone from phonenumbers' data. A number that spans several zones takes
    `fallback` (the campaign's) when it is one of them, else the first listed; a number with no
    known zone takes `fallback`."""
    zones = _zones(e164)
    if not zones:
        return fallback
    return fallback if fallback in zones else zones[0]


def _zones(e164: str) -> tuple[str, ...]:
    """phonenumbers' longest-prefix lookup in its time-zone table, on the E.164 digits."""
    digits = e164[1:]
    for length in range(min(TIMEZONE_LONGEST_PREFIX, len(digits)), 0, -1):
        zones = _KNOWN_ZONES.get(digits[:length])
        if zones is not None:
            return zones
    return ()


# The table's entries without phonenumbers' "unknown" zone, filtered once rather than per row.
_KNOWN_ZONES = {
    prefix: tuple(z for z in zones if z != _UNKNOWN_ZONE) for prefix, zones in TIMEZONE_DATA.items() if zones
}
