"""The words of htk's string fields that take a fixed set of them (statuses,
update types, outcomes), read from the protos' enums, where the API declares
them once (see `values.proto`: `words_of`)."""

import re

from google.protobuf.descriptor import EnumDescriptor

from htk.processes.v1 import process_service_pb2, task_service_pb2


def word(enum: EnumDescriptor, number: int) -> str:
    """The value `number` of `enum` as the API writes it: its name without the
    enum's prefix, in lowercase (`PROCESS_STATUS_RUNNING` is `running`)."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return enum.values_by_number[number].name.removeprefix(prefix).lower()


def words(enum: EnumDescriptor) -> list[str]:
    """Each value of `enum` but the zero one (which means "unset"), as words."""
    return [word(enum, value.number) for value in enum.values if value.number]


PROCESS_STATUSES = words(process_service_pb2.ProcessStatus.DESCRIPTOR)
SORT_ORDERS = words(process_service_pb2.SortOrder.DESCRIPTOR)
UPDATE_TYPES = words(process_service_pb2.UpdateType.DESCRIPTOR)
TASK_STATUSES = words(task_service_pb2.TaskStatus.DESCRIPTOR)
OUTCOMES = words(task_service_pb2.Outcome.DESCRIPTOR)
# A process's final statuses, which are also the types of the events that set them.
FINISHED = frozenset(
    word(process_service_pb2.ProcessStatus.DESCRIPTOR, number)
    for number in (
        process_service_pb2.PROCESS_STATUS_COMPLETED,
        process_service_pb2.PROCESS_STATUS_FAILED,
        process_service_pb2.PROCESS_STATUS_CANCELLED,
    )
)
COMPLETED = word(
    process_service_pb2.ProcessStatus.DESCRIPTOR, process_service_pb2.PROCESS_STATUS_COMPLETED
)
APPROVED = word(task_service_pb2.Outcome.DESCRIPTOR, task_service_pb2.OUTCOME_APPROVED)
REJECTED = word(task_service_pb2.Outcome.DESCRIPTOR, task_service_pb2.OUTCOME_REJECTED)
