import httpx

from tests.e2e.conftest import Org


def test_create_and_get_a_process_over_rest(rest: httpx.Client, org: Org) -> None:
    created = rest.post(
        "/api/v1/processes",
        headers=org.auth(),
        json={
            "namespace": "deployments",
            "name": "Deploy",
            "step_defs": [{"key": "build", "label": "Build"}],
        },
    )
    assert created.status_code == 200, created.text
    process_id = created.json()["process_id"]
    fetched = rest.get(f"/api/v1/processes/{process_id}", headers=org.auth(org.reader))
    assert fetched.json() == created.json()
