from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from .. import userdata
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..storage import erasure, export
from ..storage.database import Database


class UserDataServicer(session_pb2_grpc.UserDataServiceServicer):
    def __init__(self, db: Database, limits: Limits) -> None:
        self.db = db
        self.limits = limits

    async def DeleteUserData(self, request: pb.DeleteUserDataRequest, context: grpc.aio.ServicerContext):
        erased = await self.db.run(erasure.erase_user, userdata.erasure_of(request, self.limits))
        return userdata.erased_to_proto(erased)

    async def ExportUserData(
        self, request: pb.ExportUserDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportUserDataResponse]:
        """Pages through the user's data (storage/export.py), one statement per page."""
        user_id = userdata.export_of(request, self.limits)
        async for lines in export.export_user(self.db, user_id):
            for response in userdata.export_responses(lines):
                yield response
