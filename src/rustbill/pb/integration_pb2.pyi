from rustbill.pb import common_pb2 as _common_pb2
from rustbill.pb import order_pb2 as _order_pb2
from rustbill.pb import product_pb2 as _product_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PluginDef(_message.Message):
    __slots__ = ("id", "plugin_type", "plugin_id", "has_admin_page", "created_at", "updated_at", "version", "config_schema", "title", "description", "load_error", "file_present")
    ID_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_ADMIN_PAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    FILE_PRESENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    plugin_type: str
    plugin_id: str
    has_admin_page: bool
    created_at: str
    updated_at: str
    version: str
    config_schema: str
    title: str
    description: str
    load_error: str
    file_present: bool
    def __init__(self, id: _Optional[str] = ..., plugin_type: _Optional[str] = ..., plugin_id: _Optional[str] = ..., has_admin_page: _Optional[bool] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., version: _Optional[str] = ..., config_schema: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., load_error: _Optional[str] = ..., file_present: _Optional[bool] = ...) -> None: ...

class PluginInterfaceInfo(_message.Message):
    __slots__ = ("id", "plugin_def_id", "plugin_type", "plugin_id", "display_name", "enabled", "config_json", "config_schema", "created_at", "updated_at", "is_healthy", "health_error", "last_check_at", "has_admin_page", "plugin_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_DEF_ID_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    IS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_AT_FIELD_NUMBER: _ClassVar[int]
    HAS_ADMIN_PAGE_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    plugin_def_id: str
    plugin_type: str
    plugin_id: str
    display_name: str
    enabled: bool
    config_json: str
    config_schema: str
    created_at: str
    updated_at: str
    is_healthy: bool
    health_error: str
    last_check_at: str
    has_admin_page: bool
    plugin_version: str
    def __init__(self, id: _Optional[str] = ..., plugin_def_id: _Optional[str] = ..., plugin_type: _Optional[str] = ..., plugin_id: _Optional[str] = ..., display_name: _Optional[str] = ..., enabled: _Optional[bool] = ..., config_json: _Optional[str] = ..., config_schema: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., is_healthy: _Optional[bool] = ..., health_error: _Optional[str] = ..., last_check_at: _Optional[str] = ..., has_admin_page: _Optional[bool] = ..., plugin_version: _Optional[str] = ...) -> None: ...

class ProviderInfo(_message.Message):
    __slots__ = ("interface_id", "provider_name", "provider_type", "is_healthy", "spec_template")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    IS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    SPEC_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    provider_name: str
    provider_type: str
    is_healthy: bool
    spec_template: _product_pb2.SpecTemplate
    def __init__(self, interface_id: _Optional[str] = ..., provider_name: _Optional[str] = ..., provider_type: _Optional[str] = ..., is_healthy: _Optional[bool] = ..., spec_template: _Optional[_Union[_product_pb2.SpecTemplate, _Mapping]] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderInfo]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderInfo, _Mapping]]] = ...) -> None: ...

class GatewayInfo(_message.Message):
    __slots__ = ("gateway_id", "gateway_name", "is_healthy")
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_NAME_FIELD_NUMBER: _ClassVar[int]
    IS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    gateway_name: str
    is_healthy: bool
    def __init__(self, gateway_id: _Optional[str] = ..., gateway_name: _Optional[str] = ..., is_healthy: _Optional[bool] = ...) -> None: ...

class ListGatewaysResponse(_message.Message):
    __slots__ = ("gateways",)
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    gateways: _containers.RepeatedCompositeFieldContainer[GatewayInfo]
    def __init__(self, gateways: _Optional[_Iterable[_Union[GatewayInfo, _Mapping]]] = ...) -> None: ...

class NotifierInfo(_message.Message):
    __slots__ = ("channel_id", "channel_name", "is_healthy")
    CHANNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    IS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    channel_id: str
    channel_name: str
    is_healthy: bool
    def __init__(self, channel_id: _Optional[str] = ..., channel_name: _Optional[str] = ..., is_healthy: _Optional[bool] = ...) -> None: ...

class ListNotifiersResponse(_message.Message):
    __slots__ = ("notifiers",)
    NOTIFIERS_FIELD_NUMBER: _ClassVar[int]
    notifiers: _containers.RepeatedCompositeFieldContainer[NotifierInfo]
    def __init__(self, notifiers: _Optional[_Iterable[_Union[NotifierInfo, _Mapping]]] = ...) -> None: ...

class ListPluginsRequest(_message.Message):
    __slots__ = ("plugin_type",)
    PLUGIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    plugin_type: str
    def __init__(self, plugin_type: _Optional[str] = ...) -> None: ...

class ListPluginsResponse(_message.Message):
    __slots__ = ("plugins",)
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    plugins: _containers.RepeatedCompositeFieldContainer[PluginDef]
    def __init__(self, plugins: _Optional[_Iterable[_Union[PluginDef, _Mapping]]] = ...) -> None: ...

class GetPluginRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetPluginResponse(_message.Message):
    __slots__ = ("plugin",)
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    plugin: PluginDef
    def __init__(self, plugin: _Optional[_Union[PluginDef, _Mapping]] = ...) -> None: ...

class ListPluginInterfacesRequest(_message.Message):
    __slots__ = ("plugin_type",)
    PLUGIN_TYPE_FIELD_NUMBER: _ClassVar[int]
    plugin_type: str
    def __init__(self, plugin_type: _Optional[str] = ...) -> None: ...

class ListPluginInterfacesResponse(_message.Message):
    __slots__ = ("interfaces",)
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    interfaces: _containers.RepeatedCompositeFieldContainer[PluginInterfaceInfo]
    def __init__(self, interfaces: _Optional[_Iterable[_Union[PluginInterfaceInfo, _Mapping]]] = ...) -> None: ...

class GetPluginInterfaceRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class GetPluginInterfaceResponse(_message.Message):
    __slots__ = ("interface",)
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    interface: PluginInterfaceInfo
    def __init__(self, interface: _Optional[_Union[PluginInterfaceInfo, _Mapping]] = ...) -> None: ...

class CreatePluginInterfaceRequest(_message.Message):
    __slots__ = ("plugin_def_id", "display_name", "config_json")
    PLUGIN_DEF_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    plugin_def_id: str
    display_name: str
    config_json: str
    def __init__(self, plugin_def_id: _Optional[str] = ..., display_name: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...

class CreatePluginInterfaceResponse(_message.Message):
    __slots__ = ("interface",)
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    interface: PluginInterfaceInfo
    def __init__(self, interface: _Optional[_Union[PluginInterfaceInfo, _Mapping]] = ...) -> None: ...

class UpdatePluginInterfaceRequest(_message.Message):
    __slots__ = ("interface_id", "config_json", "display_name")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    config_json: str
    display_name: str
    def __init__(self, interface_id: _Optional[str] = ..., config_json: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class UpdatePluginInterfaceResponse(_message.Message):
    __slots__ = ("interface",)
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    interface: PluginInterfaceInfo
    def __init__(self, interface: _Optional[_Union[PluginInterfaceInfo, _Mapping]] = ...) -> None: ...

class TogglePluginInterfaceRequest(_message.Message):
    __slots__ = ("interface_id", "enable")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLE_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    enable: bool
    def __init__(self, interface_id: _Optional[str] = ..., enable: _Optional[bool] = ...) -> None: ...

class TogglePluginInterfaceResponse(_message.Message):
    __slots__ = ("interface",)
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    interface: PluginInterfaceInfo
    def __init__(self, interface: _Optional[_Union[PluginInterfaceInfo, _Mapping]] = ...) -> None: ...

class DeletePluginInterfaceRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class DeletePluginInterfaceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckPluginHealthRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class CheckPluginHealthResponse(_message.Message):
    __slots__ = ("is_healthy", "error", "checked_at")
    IS_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    is_healthy: bool
    error: str
    checked_at: str
    def __init__(self, is_healthy: _Optional[bool] = ..., error: _Optional[str] = ..., checked_at: _Optional[str] = ...) -> None: ...

class GetPluginAdminPageRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class GetPluginAdminPageResponse(_message.Message):
    __slots__ = ("html_content", "title")
    HTML_CONTENT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    html_content: str
    title: str
    def __init__(self, html_content: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class CallPluginActionRequest(_message.Message):
    __slots__ = ("interface_id", "function", "args_json")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    function: str
    args_json: str
    def __init__(self, interface_id: _Optional[str] = ..., function: _Optional[str] = ..., args_json: _Optional[str] = ...) -> None: ...

class CallPluginActionResponse(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class QueryPriceRequest(_message.Message):
    __slots__ = ("interface_id", "cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps", "region", "os", "extra_specs")
    class ExtraSpecsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    DISK_GB_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_SPECS_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    cpu_cores: int
    memory_gb: int
    disk_gb: int
    bandwidth_mbps: int
    region: str
    os: str
    extra_specs: _containers.ScalarMap[str, str]
    def __init__(self, interface_id: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., memory_gb: _Optional[int] = ..., disk_gb: _Optional[int] = ..., bandwidth_mbps: _Optional[int] = ..., region: _Optional[str] = ..., os: _Optional[str] = ..., extra_specs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QueryPriceResponse(_message.Message):
    __slots__ = ("amount", "currency", "billing_cycle")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BILLING_CYCLE_FIELD_NUMBER: _ClassVar[int]
    amount: str
    currency: str
    billing_cycle: str
    def __init__(self, amount: _Optional[str] = ..., currency: _Optional[str] = ..., billing_cycle: _Optional[str] = ...) -> None: ...

class UpstreamOrderRequest(_message.Message):
    __slots__ = ("interface_id", "server_spec")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_SPEC_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    server_spec: _order_pb2.ServerSpec
    def __init__(self, interface_id: _Optional[str] = ..., server_spec: _Optional[_Union[_order_pb2.ServerSpec, _Mapping]] = ...) -> None: ...

class UpstreamOrderResponse(_message.Message):
    __slots__ = ("provider_instance_id", "status", "ip_address", "instance_id")
    PROVIDER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    provider_instance_id: str
    status: str
    ip_address: str
    instance_id: str
    def __init__(self, provider_instance_id: _Optional[str] = ..., status: _Optional[str] = ..., ip_address: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class InstanceStatusRequest(_message.Message):
    __slots__ = ("interface_id", "instance_id")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    instance_id: str
    def __init__(self, interface_id: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class InstanceStatusResponse(_message.Message):
    __slots__ = ("status", "ip_address")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    status: str
    ip_address: str
    def __init__(self, status: _Optional[str] = ..., ip_address: _Optional[str] = ...) -> None: ...

class SyncUpstreamInstancesRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class UpstreamInstanceItem(_message.Message):
    __slots__ = ("instance_id", "status", "ip_address", "created_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    status: str
    ip_address: str
    created_at: str
    def __init__(self, instance_id: _Optional[str] = ..., status: _Optional[str] = ..., ip_address: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class SyncUpstreamInstancesResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[UpstreamInstanceItem]
    def __init__(self, instances: _Optional[_Iterable[_Union[UpstreamInstanceItem, _Mapping]]] = ...) -> None: ...

class ImportUpstreamInstanceRequest(_message.Message):
    __slots__ = ("interface_id", "instance_id")
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    instance_id: str
    def __init__(self, interface_id: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class ImportUpstreamInstanceResponse(_message.Message):
    __slots__ = ("instance_id", "status", "ip_address")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    status: str
    ip_address: str
    def __init__(self, instance_id: _Optional[str] = ..., status: _Optional[str] = ..., ip_address: _Optional[str] = ...) -> None: ...

class GetUpstreamBalanceRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class GetUpstreamBalanceResponse(_message.Message):
    __slots__ = ("balance", "currency")
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    balance: str
    currency: str
    def __init__(self, balance: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...
