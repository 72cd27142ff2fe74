"""The method table: every RPC's access rule read from its proto, or no server."""

import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

from htk.processes.v1 import access_pb2
from server.domain.tokens import Scope
from server.transport.methods import UndeclaredAccess, api_services, method_table


def _service(*methods: descriptor_pb2.MethodDescriptorProto) -> descriptor.ServiceDescriptor:
    """A service `test.Probe` of the given methods, in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (descriptor_pb2.DESCRIPTOR, access_pb2.DESCRIPTOR):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(dependency.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(
        name="probe.proto",
        package="test",
        dependency=["google/protobuf/descriptor.proto", "htk/processes/v1/access.proto"],
        message_type=[descriptor_pb2.DescriptorProto(name="Empty")],
        service=[descriptor_pb2.ServiceDescriptorProto(name="Probe", method=methods)],
    )
    pool.Add(file)
    return pool.FindServiceByName("test.Probe")


def _method(
    name: str,
    *,
    any_token: bool = False,
    scopes: tuple[str, ...] = (),
    read: bool = False,
    declared: bool = True,
) -> descriptor_pb2.MethodDescriptorProto:
    options = descriptor_pb2.MethodOptions()
    if read:
        options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    if declared:
        access = options.Extensions[access_pb2.access]
        access.any_token = any_token
        access.any_of_scopes.extend(scopes)
    return descriptor_pb2.MethodDescriptorProto(
        name=name, input_type=".test.Empty", output_type=".test.Empty", options=options
    )


def test_the_api_declares_every_method() -> None:
    table = method_table(api_services())
    assert table["/htk.processes.v1.ProcessService/GetProcess"].read_only
    assert not table["/htk.processes.v1.ProcessService/GetProcess"].scopes
    assert table["/htk.processes.v1.ProcessService/UpdateProcess"].scopes == {
        Scope.PROCESSES_WRITE,
        Scope.TASKS_CREATE,
    }


def test_declared_methods_become_entries() -> None:
    table = method_table(
        [
            _service(
                _method("Read", any_token=True, read=True),
                _method("Write", scopes=("processes:write",)),
            )
        ]
    )
    assert table["/test.Probe/Read"].read_only and not table["/test.Probe/Read"].scopes
    assert table["/test.Probe/Write"].scopes == {Scope.PROCESSES_WRITE}
    assert not table["/test.Probe/Write"].read_only


@pytest.mark.parametrize(
    ("method", "problem"),
    [
        (_method("Bare", declared=False), "declares no `option (htk.processes.v1.access)`"),
        (_method("Empty"), "set exactly one of any_token, any_of_scopes and no_token"),
        (_method("Both", any_token=True, scopes=("processes:write",), read=True), "exactly one"),
        (_method("OpenWrite", any_token=True), "only a read"),
        (_method("Typo", scopes=("processes:wirte",)), "processes:wirte"),
    ],
)
def test_a_method_without_a_valid_rule_stops_the_server(
    method: descriptor_pb2.MethodDescriptorProto, problem: str
) -> None:
    with pytest.raises(UndeclaredAccess, match=rf"^/test\.Probe/{method.name}\b") as raised:
        method_table([_service(method)])
    assert problem in str(raised.value)
