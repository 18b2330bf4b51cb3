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
