"""The HTTP port beyond 127.0.0.1 (HTK_BIND_ADDRESS), TLS on it with a
certificate the test makes, and settings `htk run` refuses before starting
anything. Traffic stays on loopback addresses."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_clients import CLIENTS, CLIENTS_STACK_ENV, client_env, run_tests, tool
from tests.support.stack import HTK, Stack, running_stack
from tests.support.tls import make_certificate

# Another loopback address: reached only if Envoy listens beyond 127.0.0.1.
OTHER_LOOPBACK = "127.0.0.2"


def test_by_default_the_http_port_listens_on_127_0_0_1_alone(stack: Stack) -> None:
    port = stack.env["HTK_HTTP_PORT"]
    assert httpx.get(f"{stack.http_url}/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{OTHER_LOOPBACK}:{port}/healthz")


def test_bind_address_0_0_0_0_serves_other_addresses(tmp_path: Path) -> None:
    everywhere = "0.0.0.0"  # noqa: S104 (what the test is about; probed on loopback only)
    with running_stack(tmp_path, env={"HTK_BIND_ADDRESS": everywhere}) as stack:
        port = stack.env["HTK_HTTP_PORT"]
        token = stack.token("bound", scopes="")
        caller = httpx.get(
            f"http://{OTHER_LOOPBACK}:{port}/api/v1/caller",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert caller.status_code == 200, caller.text
        assert caller.json()["organization"] == "bound"
        assert httpx.get(f"http://{OTHER_LOOPBACK}:{port}/readyz").status_code == 200
        # Envoy's admin interface stays on 127.0.0.1.
        admin_port = stack.env["HTK_ENVOY_ADMIN_PORT"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{OTHER_LOOPBACK}:{admin_port}/ready")


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("tls")
    certificate = make_certificate(folder / "certificate")
    # The clients' tests run against it too (below).
    env = {**certificate.env, **CLIENTS_STACK_ENV}
    with running_stack(folder / "stack", env=env) as stack:
        yield stack


def _curl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    assert stack.tls_ca is not None
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(stack.tls_ca), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_reaches_the_api_over_https(tls_stack: Stack, version: str) -> None:
    token = tls_stack.token("tls", scopes="")
    caller = _curl(
        tls_stack,
        version,
        "-w",
        "\n%{http_version}",
        "-H",
        f"Authorization: Bearer {token}",
        f"{tls_stack.http_url}/api/v1/caller",
    )
    assert caller.returncode == 0, caller.stderr
    body, http_version = caller.stdout.rsplit("\n", 1)
    assert '"organization":"tls"' in body
    assert http_version == ("1.1" if version == "--http1.1" else "2")
    ready = _curl(tls_stack, version, f"{tls_stack.http_url}/readyz")
    assert ready.returncode == 0 and '"status": "ready"' in ready.stdout


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_stack: Stack) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_stack.http_url}/healthz")


def test_plain_http_gets_no_answer_on_the_tls_port(tls_stack: Stack) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_stack.env['HTK_HTTP_PORT']}/healthz")


def test_the_python_stubs_call_over_tls(tls_stack: Stack) -> None:
    token = tls_stack.token("tls-grpc", scopes="")
    credentials = tls_stack.grpc_credentials()
    assert credentials is not None
    with grpc.secure_channel(f"localhost:{tls_stack.env['HTK_HTTP_PORT']}", credentials) as channel:
        caller = pb_grpc.ProcessServiceStub(channel).GetCaller(
            pb.GetCallerRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=30
        )
    assert caller.organization == "tls-grpc"


def _client_env(stack: Stack) -> dict[str, str]:
    assert stack.tls_ca is not None
    return {
        **client_env(stack),
        # Each runtime's own way to trust one more CA: Go's (crypto/x509 on
        # Linux) and Node's.
        "SSL_CERT_FILE": str(stack.tls_ca),
        "NODE_EXTRA_CA_CERTS": str(stack.tls_ca),
    }


def test_the_go_client_calls_an_https_url(tls_stack: Stack) -> None:
    run_tests([tool("go"), "test", "-count=1", "./..."], CLIENTS / "go", _client_env(tls_stack))


def test_the_typescript_client_calls_an_https_url(tls_stack: Stack) -> None:
    run_tests([tool("npm"), "test"], CLIENTS / "typescript", _client_env(tls_stack))


# --- settings refused before anything starts ---------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HTK_HTTP_PORT": "7311", "HTK_ENVOY_ADMIN_PORT": "7311"},
            "HTK_HTTP_PORT and HTK_ENVOY_ADMIN_PORT are both 7311: each port must differ",
        ),
        (
            {"HTK_TLS_CERT_FILE": "/nonexistent/cert.pem"},
            "HTK_TLS_CERT_FILE and HTK_TLS_KEY_FILE go together",
        ),
    ],
)
def test_htk_run_refuses_bad_network_settings_before_starting_anything(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [HTK, "run"],
        env={**os.environ, "HTK_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.count("\n") == 2  # argparse's usage line and the message
    assert not data_dir.exists()  # no database, no Envoy config: nothing started
