from __future__ import annotations

import grpc

from .. import retention as convert
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..storage import retention
from ..storage.database import Database


class RetentionServicer(session_pb2_grpc.RetentionServiceServicer):
    def __init__(self, db: Database, limits: Limits) -> None:
        self.db = db
        self.limits = limits

    async def GetRetentionPolicy(self, request: pb.GetRetentionPolicyRequest, context: grpc.aio.ServicerContext):
        policy = await self.db.run(retention.get_policy, convert.app_of(request, self.limits))
        return pb.GetRetentionPolicyResponse(policy=convert.policy_to_proto(policy))

    async def SetRetentionPolicy(self, request: pb.SetRetentionPolicyRequest, context: grpc.aio.ServicerContext):
        policy = await self.db.run(retention.set_policy, convert.policy_to_set(request, self.limits))
        return pb.SetRetentionPolicyResponse(policy=convert.policy_to_proto(policy))

    async def DeleteRetentionPolicy(self, request: pb.DeleteRetentionPolicyRequest,
                                    context: grpc.aio.ServicerContext):
        deleted = await self.db.run(retention.delete_policy, convert.app_of(request, self.limits))
        return pb.DeleteRetentionPolicyResponse(deleted=deleted)
