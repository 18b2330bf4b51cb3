from aicmo.orchestration.redaction import redact, register_secret


def test_registered_secret_values_are_masked() -> None:
    register_secret("hunter2-smtp-pass")
    assert "hunter2" not in redact("login failed for user bob with hunter2-smtp-pass")


def test_credential_shapes_are_masked() -> None:
    text = (
        "GET redis://user:s3cr3t@host/0 Authorization: Bearer abc.def.ghi "
        "api_key=XYZ123 password: pw123 sk-abcdefghijklmnop"
    )
    cleaned = redact(text)
    for secret in ("s3cr3t", "abc.def.ghi", "XYZ123", "pw123", "abcdefghijklmnop"):
        assert secret not in cleaned
    assert "redis://user:***@host/0" in cleaned


def test_database_errors_lose_their_parameters_and_the_rows_they_quote() -> None:
    text = (
        "IntegrityError: (psycopg.errors.UniqueViolation) duplicate key value violates unique "
        'constraint "uq_cam_leads_email"\n'
        "DETAIL:  Key (email)=(bob@example.com) already exists.\n"
        "[SQL: INSERT INTO cam_leads (email, tags) VALUES (%(email)s, %(tags)s)]\n"
        "[parameters: {'email': 'bob@example.com', 'tags': ['a]b', 'c']}]\n"
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)"
    )
    cleaned = redact(text)
    assert "bob@example.com" not in cleaned and "a]b" not in cleaned
    # What the operator needs stays: the error, the constraint, the statement.
    assert "UniqueViolation" in cleaned and "uq_cam_leads_email" in cleaned
    assert "INSERT INTO cam_leads" in cleaned and "[parameters: hidden]" in cleaned
