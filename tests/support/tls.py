"""A throwaway certificate for TLS tests, made by `openssl`: self-signed, so
it is its own CA, for `localhost` and 127.0.0.1."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    @property
    def env(self) -> dict[str, str]:
        """The settings that serve TLS with it."""
        return {"HTK_TLS_CERT_FILE": str(self.cert_file), "HTK_TLS_KEY_FILE": str(self.key_file)}


def make_certificate(folder: Path) -> Certificate:
    folder.mkdir(parents=True, exist_ok=True)
    certificate = Certificate(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-keyout", str(certificate.key_file), "-out", str(certificate.cert_file),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return certificate
