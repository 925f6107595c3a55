from __future__ import annotations

import grpc

from .. import userdata
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..storage import erasure
from ..storage.database import Database


class UserDataServicer(session_pb2_grpc.UserDataServiceServicer):
    def __init__(self, db: Database, limits: Limits) -> None:
        self.db = db
        self.limits = limits

    async def DeleteUserData(self, request: pb.DeleteUserDataRequest, context: grpc.aio.ServicerContext):
        erased = await self.db.run(erasure.erase_user, userdata.erasure_of(request, self.limits))
        return userdata.erased_to_proto(erased)
