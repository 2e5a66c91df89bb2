from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ServerSpec(_message.Message):
    __slots__ = ("cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps", "region", "os", "extra_specs")
    class ExtraSpecsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    DISK_GB_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_SPECS_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    bandwidth_mbps: int
    region: str
    os: str
    extra_specs: _containers.ScalarMap[str, str]
    def __init__(self, cpu_cores: _Optional[int] = ..., memory_gb: _Optional[int] = ..., disk_gb: _Optional[int] = ..., bandwidth_mbps: _Optional[int] = ..., region: _Optional[str] = ..., os: _Optional[str] = ..., extra_specs: _Optional[_Mapping[str, str]] = ...) -> None: ...
