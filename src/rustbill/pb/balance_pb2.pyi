from rustbill.pb import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetBalanceRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("customer_id", "balance", "credit_limit", "currency")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    balance: str
    credit_limit: str
    currency: str
    def __init__(self, customer_id: _Optional[str] = ..., balance: _Optional[str] = ..., credit_limit: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class ListBalanceTransactionsRequest(_message.Message):
    __slots__ = ("customer_id", "pagination")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    pagination: _common_pb2.PageRequest
    def __init__(self, customer_id: _Optional[str] = ..., pagination: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class BalanceTransaction(_message.Message):
    __slots__ = ("id", "customer_id", "amount", "balance_after", "kind", "instance_id", "note", "created_by", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    customer_id: str
    amount: str
    balance_after: str
    kind: str
    instance_id: str
    note: str
    created_by: str
    created_at: str
    def __init__(self, id: _Optional[str] = ..., customer_id: _Optional[str] = ..., amount: _Optional[str] = ..., balance_after: _Optional[str] = ..., kind: _Optional[str] = ..., instance_id: _Optional[str] = ..., note: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class ListBalanceTransactionsResponse(_message.Message):
    __slots__ = ("transactions", "meta")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[BalanceTransaction]
    meta: _common_pb2.PageMeta
    def __init__(self, transactions: _Optional[_Iterable[_Union[BalanceTransaction, _Mapping]]] = ..., meta: _Optional[_Union[_common_pb2.PageMeta, _Mapping]] = ...) -> None: ...
