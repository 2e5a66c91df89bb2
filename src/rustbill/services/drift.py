"""DriftService: the drift watch's findings for the console's Upstream page (admins only; the
comparing and the rules are in ``domain.drift``)."""

from __future__ import annotations

import logging

from ..db import DriftFinding
from ..domain.drift import CONDITIONS, DriftWatch, kind_of, subject_of
from ..errors import InvalidArgument
from ..ids import parse_uuid, rfc3339
from ..pb import common_pb2
from ..pb import drift_pb2 as pb
from .dispatch import Call

__all__ = ["DriftServicer"]

audit = logging.getLogger("rustbill.audit")


def _finding(f: DriftFinding) -> pb.DriftFinding:
    kind = kind_of(f.key)
    return pb.DriftFinding(
        interface_id=str(f.interface_id),
        key=f.key,
        kind=kind,
        message=f.message,
        created_at=rfc3339(f.created_at),
        subject=subject_of(f.key),
        acknowledgeable=kind not in CONDITIONS,
    )


class DriftServicer:
    def __init__(self, drift: DriftWatch) -> None:
        self._drift = drift

    async def ListDriftFindings(self, request: pb.ListDriftFindingsRequest, call: Call) -> pb.ListDriftFindingsResponse:
        iid = parse_uuid(request.interface_id, "interface_id") if request.interface_id else None
        return pb.ListDriftFindingsResponse(findings=[_finding(f) for f in await self._drift.findings(iid)])

    async def CheckDrift(self, request: pb.CheckDriftRequest, call: Call) -> pb.ListDriftFindingsResponse:
        rows = await self._drift.check_now(parse_uuid(request.interface_id, "interface_id"))
        return pb.ListDriftFindingsResponse(findings=[_finding(f) for f in rows])

    async def AcknowledgeDriftFinding(
        self, request: pb.AcknowledgeDriftFindingRequest, call: Call
    ) -> common_pb2.EmptyResponse:
        iid = parse_uuid(request.interface_id, "interface_id")
        if not request.key:
            raise InvalidArgument("key is required (a finding's key, e.g. price:<upstream product id>)")
        await self._drift.acknowledge(iid, request.key)
        who = call.principal.username if call.principal is not None else "-"
        audit.info("drift finding %s at interface %s acknowledged by %s", request.key, iid, who)
        return common_pb2.EmptyResponse()
