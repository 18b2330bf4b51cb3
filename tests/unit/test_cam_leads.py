"""Lead normalisation, identity hashing and consent merging (pure functions)."""

from __future__ import annotations

import pytest

from aicmo.cam.leads import (
    LeadIn,
    identity_hash,
    merge_consent,
    normalise_email,
    normalise_linkedin,
    normalise_phone,
    validate_lead,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" Ada@Example.COM ", "ada@example.com"), ("mailto:bob@x.io", "bob@x.io")],
)
def test_emails_are_normalised(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["ada", "ada@", "@x.io", "a b@x.io", "ada@localhost"])
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not an email address"):
        normalise_email(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+33 6 12-34.56 (78)", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("06 12 34 56 78", "0612345678"),
    ],
)
def test_phones_are_normalised(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", ["12345", "+1234567890123456", "call me"])
def test_bad_phones_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        normalise_phone(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "https://www.LinkedIn.com/in/Ada-L/",
        "http://linkedin.com/in/ada-l?trk=x#top",
        "fr.linkedin.com/in/ada-l",
        "linkedin.com/in/ada-l",
    ],
)
def test_linkedin_urls_are_normalised(raw: str) -> None:
    assert normalise_linkedin(raw) == "linkedin.com/in/ada-l"


@pytest.mark.parametrize("raw", ["https://evil-linkedin.com/in/x", "https://linkedin.com/"])
def test_bad_linkedin_urls_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="LinkedIn URL"):
        normalise_linkedin(raw)


def test_the_identity_hash_uses_the_strongest_identifier() -> None:
    by_email = identity_hash("ada@x.io", "linkedin.com/in/ada", "+331234567")
    assert by_email == identity_hash("ada@x.io")
    assert identity_hash(None, "linkedin.com/in/ada", "+331234567") == identity_hash(
        None, "linkedin.com/in/ada"
    )
    assert identity_hash(None, None, "+331234567") != identity_hash("+331234567")
    assert len(by_email) == 64
    with pytest.raises(ValueError, match="needs an email"):
        identity_hash(None, None, None)


def test_a_lead_keeps_unknown_fields_as_attributes() -> None:
    lead = validate_lead(
        {"email": "A@X.io", "first_name": "  ", "plan": "pro", "attributes": {"seats": 3}}
    )
    assert isinstance(lead, LeadIn)
    assert (lead.email, lead.first_name) == ("a@x.io", None)
    assert lead.attributes == {"plan": "pro", "seats": 3}
    assert lead.model_extra == {}
    assert lead.identity_hash == identity_hash("a@x.io")


def test_a_lead_reports_every_problem() -> None:
    with pytest.raises(ValueError, match="a lead needs an email"):
        validate_lead({"first_name": "Ghost"})
    with pytest.raises(ValueError, match="consent"):
        validate_lead({"email": "a@x.io", "consent": "MAYBE"})
    with pytest.raises(ValueError, match="JSON object"):
        validate_lead(["a@x.io"])
    assert validate_lead({"phone": 33612345678}).phone == "33612345678"


@pytest.mark.parametrize(
    ("current", "incoming", "merged"),
    [
        ("UNKNOWN", "CONSENTED", "CONSENTED"),
        ("CONSENTED", "UNKNOWN", "CONSENTED"),
        ("CONSENTED", "DNC", "DNC"),
        ("DNC", "CONSENTED", "DNC"),
        ("DNC", "UNKNOWN", "DNC"),
        ("UNKNOWN", "UNKNOWN", "UNKNOWN"),
    ],
)
def test_dnc_is_sticky(current: str, incoming: str, merged: str) -> None:
    assert merge_consent(current, incoming) == merged


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ada\r\nBcc: evil@x.io", "Ada Bcc: evil@x.io"),
        ("Ada\nLovelace", "Ada Lovelace"),
        ("\tAda\x00\x1b[31m", "Ada [31m"),
        ("Acme\u2028Corp\x85", "Acme Corp"),
    ],
)
def test_control_characters_in_names_and_companies_are_cleaned_at_capture(
    raw: str, expected: str
) -> None:
    lead = validate_lead(
        {"email": "ada@x.io", "first_name": raw, "last_name": raw, "company": raw, "title": raw}
    )
    assert (lead.first_name, lead.last_name, lead.company, lead.title) == (expected,) * 4


def test_a_name_made_only_of_control_characters_is_no_name() -> None:
    assert validate_lead({"email": "ada@x.io", "first_name": "\r\n\t"}).first_name is None


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("email", "ada\x00@x.io"),
        ("email", "ada@x.io\x1b"),
        ("linkedin_url", "linkedin.com/in/ada\nBcc"),
    ],
)
def test_identifiers_with_control_characters_are_refused_at_capture(field: str, raw: str) -> None:
    with pytest.raises(ValueError, match=r"control characters|not an email address"):
        validate_lead({"phone": "+33612345678", field: raw})
