"""Property tests (Hypothesis) for what arrives in CSV files: phone normalisation and the contact
reader never crash on any input, and an import accounts for every row, imported or reported."""

import asyncio
import csv
import io
import json
import random
import re
import tempfile
import uuid
from pathlib import Path

import phonenumbers
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import func, select

from outcall import phone_numbers
from outcall.campaigns import CampaignSettings
from outcall.contact_file import PHONE_COLUMNS, TIMEZONE_COLUMNS, ContactFile, FileOptions, ImportRefused, column_name
from outcall.contact_import import ContactImport
from outcall.database import Database, uninterrupted, utcnow
from outcall.models import Campaign, Contact
from outcall.phone_numbers import NumberError, to_e164, valid_for_region

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
BOUNDED = settings(max_examples=150, deadline=None, derandomize=True)

# Numbers as people type them: real ones in many shapes, near-misses, and noise.
digits = st.text("0123456789", min_size=1, max_size=16)
phones = st.one_of(
    st.sampled_from(["+14155552671", "(415) 555-2671", "415.555.2671", "+44 20 7946 0958", "020 7946 0958", "+1555123", "+800 1234 5678"]),
    digits, digits.map(lambda d: "+" + d), st.text(max_size=25),
)


@BOUNDED
@given(raw=phones, region=st.sampled_from([None, "US", "GB", "DE"]))
def test_phone_normalisation_returns_valid_e164_or_says_why(raw, region):
    try:
        e164 = to_e164(raw, region)
    except NumberError as e:
        assert str(e)
        return
    assert E164.match(e164) and phonenumbers.is_valid_number(phonenumbers.parse(e164))
    assert to_e164(e164) == e164  # normalising again changes nothing


def read_all(data: bytes, encoding: str | None = None) -> tuple[list, list] | None:
    """Every row and error the reader yields; None if it refused the file as a whole."""
    try:
        reader = ContactFile(io.BytesIO(data), FileOptions(campaign_timezone="UTC", encoding=encoding))
    except ImportRefused as e:
        assert str(e)
        return None
    rows, errors = [], []
    for batch_rows, batch_errors in reader.batches():
        rows += batch_rows
        errors += batch_errors
    return rows, errors


@BOUNDED
@given(data=st.binary(max_size=600), encoding=st.sampled_from([None, "latin-1", "utf-16", "utf-16-le", "utf-32"]))
def test_arbitrary_bytes_never_crash_the_reader(data, encoding):
    read_all(b"phone,name\n" + data, encoding)
    read_all(data, encoding)


field_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20)
csv_rows = st.lists(st.tuples(phones, field_text), min_size=1, max_size=30)


def as_csv(rows: list[tuple[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["phone", "name"])
    writer.writerows(rows)
    return out.getvalue().encode()


@BOUNDED
@given(rows=csv_rows)
def test_every_row_is_read_as_a_contact_or_reported_with_a_reason(rows):
    read = read_all(as_csv(rows))
    assert read is not None
    contacts, errors = read
    assert len(contacts) + len(errors) == len(rows)
    assert all(error.reason for error in errors)
    assert all(E164.match(contact.phone) for contact in contacts)
    lines = sorted([c.line for c in contacts] + [e.row for e in errors])  # file lines: a quoted newline spans two
    assert len(set(lines)) == len(lines) and lines[0] >= 2


header_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\r\n"), max_size=12)
value_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\r\n"), max_size=20)


@BOUNDED
@given(
    headers=st.lists(header_text, min_size=1, max_size=4).filter(
        lambda headers: len(set(names := [column_name(h, i + 1) for i, h in enumerate(headers)])) == len(headers)
        and not set(names) & {*PHONE_COLUMNS, *TIMEZONE_COLUMNS}
    ),
    data=st.data(),
)
def test_a_rows_variables_are_the_json_that_json_dumps_writes(headers, data):
    """The reader writes each row's variables as JSON itself (json.dumps is slow per row): the
    same text as json.dumps, for any header and any value (quotes, backslashes, any script)."""
    values = data.draw(st.lists(value_text, min_size=len(headers), max_size=len(headers)))
    out = io.StringIO()
    csv.writer(out).writerows([["phone", *headers], ["+14155552671", *values]])
    read = read_all(out.getvalue().encode())
    assert read is not None
    (row,), errors = read
    names = [column_name(h, i + 1) for i, h in enumerate(headers)]
    assert row.variables_json == json.dumps(dict(zip(names, [v.strip() for v in values])))


@uninterrupted
async def add_campaign(database: Database) -> Campaign:
    campaign = Campaign(id=str(uuid.uuid4()), name="fuzz", settings=CampaignSettings(timezone="UTC").model_dump(mode="json"))
    async with database.write() as session:
        session.add(campaign)
    return campaign


@uninterrupted
async def stored(database: Database, campaign_id: str) -> int:
    async with database.session() as session:
        return await session.scalar(select(func.count()).where(Contact.campaign_id == campaign_id))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(rows=csv_rows)
def test_an_import_stores_exactly_the_rows_it_reports_imported(rows):
    async def run():
        with tempfile.TemporaryDirectory() as folder:
            database = Database(f"sqlite+aiosqlite:///{folder}/outcall.db")
            await database.migrate()
            campaign = await add_campaign(database)
            path = Path(folder) / "contacts.csv"
            path.write_bytes(as_csv(rows))
            result = await ContactImport(database, campaign, path, now=utcnow()).run()
            count = await stored(database, campaign.id)
            await database.close()
        assert result.imported + result.rejected == len(rows)  # duplicates are rejected rows too
        assert count == result.imported

    asyncio.run(run())


def accepted(e164: str) -> bool:
    try:
        return to_e164(e164) == e164
    except NumberError:
        return False


def test_validity_is_phonenumbers_own_in_every_region():
    """outcall.phone_numbers.valid_for_region (one match per pattern set) decides as
    phonenumbers.is_valid_number_for_region on each region's example numbers of every type and
    near-misses of them (digits changed, dropped, added), in their own region and another, and
    on the numbers of no region (+800, +979…). to_e164's path for +<digits> (no PhoneNumber
    built) accepts each exactly when its path for parsed numbers does."""
    rng = random.Random(13)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    compared = valid = 0
    for region in regions:
        code = phonenumbers.country_code_for_region(region)
        for number_type in range(12):
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is None:
                continue
            digits = phonenumbers.national_significant_number(example)
            for _ in range(8):
                changed = list(digits)
                for _ in range(rng.randint(0, 2)):
                    changed[rng.randrange(len(changed))] = str(rng.randint(0, 9))
                changed = changed[: rng.choice([len(changed) - 1, len(changed), len(changed)])]
                changed += [str(rng.randint(0, 9))] if rng.random() < 0.2 else []
                if not changed or changed[0] == "0":
                    continue
                number = phonenumbers.PhoneNumber(country_code=code, national_number=int("".join(changed)))
                assert accepted(f"+{code}{''.join(changed)}") == phone_numbers._is_valid(number), number
                for where in (region, rng.choice(regions)):
                    expected = phonenumbers.is_valid_number_for_region(number, where)
                    assert valid_for_region(number, where) == expected, (number, where)
                    compared, valid = compared + 1, valid + expected
    assert compared > 10_000 and compared / 10 < valid < compared * 0.9  # both answers well represented
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:  # +800, +979…: region "001"
        example = phonenumbers.example_number_for_non_geo_entity(code)
        for national in (example.national_number, example.national_number // 10, example.national_number * 10 + 1):
            number = phonenumbers.PhoneNumber(country_code=code, national_number=national)
            assert valid_for_region(number, "001") == phonenumbers.is_valid_number_for_region(number, "001")
            assert accepted(f"+{code}{national}") == phone_numbers._is_valid(number), number
            assert valid_for_region(number, "US") is False
