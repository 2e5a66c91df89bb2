from rustbill.pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftFinding(_message.Message):
    __slots__ = ("interface_id", "key", "kind", "message", "created_at", "subject", "acknowledgeable")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEABLE_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    key: str
    kind: str
    message: str
    created_at: str
    subject: str
    acknowledgeable: bool
    def __init__(self, interface_id: _Optional[str] = ..., key: _Optional[str] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., created_at: _Optional[str] = ..., subject: _Optional[str] = ..., acknowledgeable: _Optional[bool] = ...) -> None: ...

class ListDriftFindingsRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class ListDriftFindingsResponse(_message.Message):
    __slots__ = ("findings",)
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[DriftFinding]
    def __init__(self, findings: _Optional[_Iterable[_Union[DriftFinding, _Mapping]]] = ...) -> None: ...

class CheckDriftRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class AcknowledgeDriftFindingRequest(_message.Message):
    __slots__ = ("interface_id", "key")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    key: str
    def __init__(self, interface_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...
