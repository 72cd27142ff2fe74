"""Sorting a worker's py-spy samples into the layers of a call."""

from bench import profile

SERVE = "_run_once (asyncio/base_events.py:1922);_handle_call (grpc/_cython/cygrpc.pyx:0)"
GUARD = f"{SERVE};_guarding (/work/main/server/transport/interceptors.py:120)"


def test_a_sample_belongs_to_its_innermost_htk_frame_with_the_libraries_it_called() -> None:
    storage = (
        f"{GUARD};get_process (server/transport/servicer.py:80)"
        ";get (server/service/processes.py:40);load (server/storage/processes.py:200)"
        ";execute (psycopg/cursor_async.py:97)"
    )
    assert profile.layer_of(storage) == "storage"
    assert profile.layer_of(f"{GUARD};authenticate (server/service/tokens.py:30)") == "guards"
    assert profile.layer_of(f"{GUARD};MessageToDict (google/protobuf/json_format.py:1)") == "guards"
    assert profile.layer_of(SERVE) == profile.OUTSIDE
    # SQLAlchemy's greenlet: a stack of its own, without the htk code that called it.
    greenlet = (
        "greenlet_spawn (sqlalchemy/util/_concurrency_py3k.py:1);execute (psycopg/cursor.py:1)"
    )
    assert profile.layer_of(greenlet) == "storage"


def test_waiting_is_left_out() -> None:
    assert profile.layer_of(f"{SERVE};select (selectors.py:468)") is None
    assert profile.layer_of("_bootstrap (threading.py:1);run (threading.py:975)") is None


def test_a_frame_names_a_layer_only_by_a_folder_of_htks_code() -> None:
    # grpc's own `_server.py` and a package folder called `storage` are not htk's.
    assert profile.layer_of("_serve (grpc/aio/_server.py:1)") == profile.OUTSIDE
    assert profile.layer_of("put (google/cloud/storage/blob.py:1)") == profile.OUTSIDE
    assert profile.layer_of("read (server/edge/rest_input.py:190)") == "REST reading"
    assert profile.layer_of("process (server/transport/messages.py:50)") == "message building"


def test_shares_count_each_stack_by_its_samples_and_list_every_layer() -> None:
    collapsed = "\n".join(
        [
            f"{GUARD} 3",
            f"{GUARD};get (server/service/processes.py:40) 5",
            f"{SERVE} 2",
            "run_forever (asyncio/base_events.py:607);select (selectors.py:468) 90",
            "",
        ]
    )
    shares = profile.shares(collapsed)
    assert shares["guards"] == 0.3 and shares["service and domain"] == 0.5
    assert shares[profile.OUTSIDE] == 0.2 and shares["storage"] == 0.0
    assert list(shares) == [*(name for name, _ in profile.LAYERS), profile.OUTSIDE]
    assert profile.shares("") == {}
