"""Signing email provider events as each provider does, for the tests: an SNS signing
certificate from a local CA served over local TLS, a SendGrid EC key pair, secrets."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from aicmo.gateways.email_events.ses import canonical

CERT_NAME = "SimpleNotificationService-0123456789abcdef.pem"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(
    subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool = False, san: bool = False
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class SnsCertServer:
    """A local CA, a TLS server on 127.0.0.1 serving an SNS signing certificate, and a
    signer of SNS messages with that certificate's key."""

    def __init__(self, folder: Path) -> None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _cert("test CA", ca_key, "test CA", ca_key, ca=True)
        tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tls = _cert("localhost", tls_key, "test CA", ca_key, san=True)
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signing = _cert("sns.amazonaws.com", self.signing_key, "test CA", ca_key)
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(_pem(ca))
        (folder / "tls.pem").write_bytes(_pem(tls))
        (folder / "tls.key").write_bytes(
            tls_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.cert_pem = _pem(signing)
        self.fetches: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches.append(self.path)
                body = server.cert_pem if self.path == "/" + CERT_NAME else b"confirmed"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "tls.pem", folder / "tls.key")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.base = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def cert_url(self) -> str:
        return f"{self.base}/{CERT_NAME}"

    @property
    def pattern(self) -> str:
        return rf"^https://127\.0\.0\.1:{self.port}/SimpleNotificationService-[a-z0-9]+\.pem$"

    def start(self) -> SnsCertServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def message(
        self, inner: dict[str, Any], message_id: str, version: str = "2", **over: Any
    ) -> dict[str, Any]:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        message: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
            "Message": json.dumps(inner),
            "Timestamp": stamp,
            "SignatureVersion": version,
            "SigningCertURL": self.cert_url,
            **over,
        }
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.signing_key.sign(canonical(message), padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(public).decode()


def sendgrid_sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
