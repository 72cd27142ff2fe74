"""The HTTP port's listener as rendered from the network settings: its
address (HTK_BIND_ADDRESS) and its TLS. (Envoy itself takes these configs
in tests/e2e/test_network.py.)"""

import json
import re
from pathlib import Path
from typing import Any

from server.edge.envoy import render_envoy_config
from server.settings import Settings
from tests.support.tls import make_certificate


def _config(tmp_path: Path, **env: str) -> str:
    settings = Settings.from_env({"HTK_DATA_DIR": str(tmp_path), **env})
    return render_envoy_config(settings, stack_id=0).read_text()


def _listener_address(config: str) -> str:
    (address,) = re.findall(r"^ +socket_address: \{ address: \"([^\"]*)\", .*$", config, re.M)
    return str(address)


def _tls(config: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in re.findall(r"^ +- transport_socket: (.*)$", config, re.M)]


def test_the_listener_takes_the_bind_address_and_admin_stays_on_loopback(tmp_path: Path) -> None:
    default = _config(tmp_path)
    assert _listener_address(default) == "127.0.0.1"
    assert "ipv4_compat: false" in default
    # Every IPv6 address, and IPv4 clients too.
    everywhere = _config(tmp_path, HTK_BIND_ADDRESS="::")
    assert _listener_address(everywhere) == "::"
    assert "ipv4_compat: true" in everywhere
    assert "socket_address: { address: 127.0.0.1, port_value: 9901 }" in everywhere


def test_without_tls_the_port_is_plain(tmp_path: Path) -> None:
    assert _tls(_config(tmp_path)) == []


def test_with_tls_the_port_offers_http2_and_http1_by_alpn(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path / "certificate")
    (tls,) = _tls(_config(tmp_path, **certificate.env))
    context = tls["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    (pair,) = context["tls_certificates"]
    assert pair["certificate_chain"]["filename"] == str(certificate.cert_file)
    assert pair["private_key"]["filename"] == str(certificate.key_file)
