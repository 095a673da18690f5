"""A throw-away certificate authority for the encrypted-DNS tests and benchmarks: a CA and a
server certificate it signed (for 127.0.0.1, ::1 and `dns.blokir.test`), made with the openssl
command line so no Python dependency is needed. Nothing here trusts anything system-wide."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_NAME = "dns.blokir.test"


@dataclass(frozen=True)
class TestCa:
    __test__ = False  # not a pytest test class
    ca: Path  # the CA certificate (PEM): what clients trust
    certificate: Path  # the server's certificate (PEM)
    key: Path  # the server's private key (PEM)

    def spki_sha256(self) -> str:
        """base64 SHA-256 of the server certificate's SubjectPublicKeyInfo (Chromium's
        --ignore-certificate-errors-spki-list)."""
        pubkey = _run(["openssl", "x509", "-in", str(self.certificate), "-noout", "-pubkey"])
        der = _run(["openssl", "pkey", "-pubin", "-outform", "DER"], stdin=pubkey)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _run(args: list[str], stdin: bytes | None = None) -> bytes:
    return subprocess.run(args, input=stdin, capture_output=True, check=True, timeout=30).stdout


def make_ca(directory: Path, name: str = "server") -> TestCa:
    """A new CA in `directory` (reused when it is already there) and a server certificate
    `name`.pem / `name`.key signed by it (EC P-256, valid 30 days)."""
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    if not ca.exists():
        _run(
            ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key)]
        )
        _run(
            ["openssl", "req", "-x509", "-new", "-key", str(ca_key), "-out", str(ca), "-days",
             "30", "-subj", "/CN=blokir test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        )  # fmt: skip
    key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName=IP:127.0.0.1,IP:::1,DNS:{SERVER_NAME}\n"
        "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
    _run(
        [
            "openssl",
            "req",
            "-new",
            "-key",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={SERVER_NAME}",
        ]
    )
    _run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(extensions)]
    )  # fmt: skip
    return TestCa(ca, cert, key)
