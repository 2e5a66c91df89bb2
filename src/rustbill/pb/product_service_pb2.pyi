from rustbill.pb import common_pb2 as _common_pb2
from rustbill.pb import product_pb2 as _product_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListProductsRequest(_message.Message):
    __slots__ = ("pagination", "provider_id", "region", "is_active", "search", "group_id")
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    pagination: _common_pb2.PageRequest
    provider_id: str
    region: str
    is_active: bool
    search: str
    group_id: str
    def __init__(self, pagination: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., provider_id: _Optional[str] = ..., region: _Optional[str] = ..., is_active: _Optional[bool] = ..., search: _Optional[str] = ..., group_id: _Optional[str] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "meta")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_product_pb2.ProductInfo]
    meta: _common_pb2.PageMeta
    def __init__(self, products: _Optional[_Iterable[_Union[_product_pb2.ProductInfo, _Mapping]]] = ..., meta: _Optional[_Union[_common_pb2.PageMeta, _Mapping]] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: _product_pb2.ProductInfo
    def __init__(self, product: _Optional[_Union[_product_pb2.ProductInfo, _Mapping]] = ...) -> None: ...
