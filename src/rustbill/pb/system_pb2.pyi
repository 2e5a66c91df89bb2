from rustbill.pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PluginFileError(_message.Message):
    __slots__ = ("file", "error")
    FILE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    file: str
    error: str
    def __init__(self, file: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "started_at", "uptime_seconds", "database", "plugins_dir", "plugins_loaded", "plugin_errors", "public_url", "restart_mode", "python_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_DIR_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_LOADED_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_URL_FIELD_NUMBER: _ClassVar[int]
    RESTART_MODE_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    started_at: str
    uptime_seconds: int
    database: str
    plugins_dir: str
    plugins_loaded: int
    plugin_errors: _containers.RepeatedCompositeFieldContainer[PluginFileError]
    public_url: str
    restart_mode: str
    python_version: str
    def __init__(self, version: _Optional[str] = ..., started_at: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., database: _Optional[str] = ..., plugins_dir: _Optional[str] = ..., plugins_loaded: _Optional[int] = ..., plugin_errors: _Optional[_Iterable[_Union[PluginFileError, _Mapping]]] = ..., public_url: _Optional[str] = ..., restart_mode: _Optional[str] = ..., python_version: _Optional[str] = ...) -> None: ...
