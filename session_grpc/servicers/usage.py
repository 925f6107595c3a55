from __future__ import annotations

import grpc

from .. import accounting
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..storage import usage
from ..storage.database import Database


class UsageServicer(session_pb2_grpc.UsageServiceServicer):
    def __init__(self, db: Database, limits: Limits) -> None:
        self.db = db
        self.limits = limits

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext):
        found = await self.db.run(usage.get_usage, accounting.usage_query(request, self.limits))
        return accounting.usage_to_proto(found)
