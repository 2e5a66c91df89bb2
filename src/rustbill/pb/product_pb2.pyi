from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpecField(_message.Message):
    __slots__ = ("key", "label", "field_type", "required", "display_order", "options", "min", "max", "default_value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FIELD_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_ORDER_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    label: str
    field_type: str
    required: bool
    display_order: int
    options: _containers.RepeatedScalarFieldContainer[str]
    min: int
    max: int
    default_value: str
    def __init__(self, key: _Optional[str] = ..., label: _Optional[str] = ..., field_type: _Optional[str] = ..., required: _Optional[bool] = ..., display_order: _Optional[int] = ..., options: _Optional[_Iterable[str]] = ..., min: _Optional[int] = ..., max: _Optional[int] = ..., default_value: _Optional[str] = ...) -> None: ...

class SpecGroup(_message.Message):
    __slots__ = ("key", "label", "field_keys", "display_order")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FIELD_KEYS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_ORDER_FIELD_NUMBER: _ClassVar[int]
    key: str
    label: str
    field_keys: _containers.RepeatedScalarFieldContainer[str]
    display_order: int
    def __init__(self, key: _Optional[str] = ..., label: _Optional[str] = ..., field_keys: _Optional[_Iterable[str]] = ..., display_order: _Optional[int] = ...) -> None: ...

class SpecTemplate(_message.Message):
    __slots__ = ("fields", "groups")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[SpecField]
    groups: _containers.RepeatedCompositeFieldContainer[SpecGroup]
    def __init__(self, fields: _Optional[_Iterable[_Union[SpecField, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[SpecGroup, _Mapping]]] = ...) -> None: ...

class ProductInfo(_message.Message):
    __slots__ = ("id", "name", "description", "price", "provider_id", "active", "created_at", "updated_at", "specs", "group_id", "billing_cycles", "upstream_product_id", "currency")
    class SpecsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BillingCyclesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPECS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    BILLING_CYCLES_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    price: str
    provider_id: str
    active: bool
    created_at: str
    updated_at: str
    specs: _containers.ScalarMap[str, str]
    group_id: str
    billing_cycles: _containers.ScalarMap[str, str]
    upstream_product_id: str
    currency: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., price: _Optional[str] = ..., provider_id: _Optional[str] = ..., active: _Optional[bool] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., specs: _Optional[_Mapping[str, str]] = ..., group_id: _Optional[str] = ..., billing_cycles: _Optional[_Mapping[str, str]] = ..., upstream_product_id: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class SyncProductsRequest(_message.Message):
    __slots__ = ("interface_id",)
    INTERFACE_ID_FIELD_NUMBER: _ClassVar[int]
    interface_id: str
    def __init__(self, interface_id: _Optional[str] = ...) -> None: ...

class SyncProductsResponse(_message.Message):
    __slots__ = ("created", "updated", "deactivated", "unchanged", "products")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    DEACTIVATED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    created: int
    updated: int
    deactivated: int
    unchanged: int
    products: _containers.RepeatedCompositeFieldContainer[ProductInfo]
    def __init__(self, created: _Optional[int] = ..., updated: _Optional[int] = ..., deactivated: _Optional[int] = ..., unchanged: _Optional[int] = ..., products: _Optional[_Iterable[_Union[ProductInfo, _Mapping]]] = ...) -> None: ...
