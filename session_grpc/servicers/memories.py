from __future__ import annotations

import grpc

from .. import requests, resources
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..storage import memories
from ..storage.database import Database


class MemoryServicer(session_pb2_grpc.MemoryServiceServicer):
    def __init__(self, db: Database, limits: Limits) -> None:
        self.db = db
        self.limits = limits

    async def CreateMemory(self, request: pb.CreateMemoryRequest, context: grpc.aio.ServicerContext):
        new = requests.new_memory(request, self.limits)
        memory = await self.db.run(memories.create_memory, new)
        return pb.CreateMemoryResponse(memory=resources.memory_to_proto(memory))

    async def GetMemory(self, request: pb.GetMemoryRequest, context: grpc.aio.ServicerContext):
        memory = await self.db.run(memories.get_memory, requests.session_ref(request.session_id))
        return pb.GetMemoryResponse(memory=resources.memory_to_proto(memory))

    async def UpdateMemory(self, request: pb.UpdateMemoryRequest, context: grpc.aio.ServicerContext):
        patch = requests.memory_patch(request, self.limits)
        memory = await self.db.run(memories.update_memory, patch)
        return pb.UpdateMemoryResponse(memory=resources.memory_to_proto(memory))

    async def DeleteMemory(self, request: pb.DeleteMemoryRequest, context: grpc.aio.ServicerContext):
        await self.db.run(memories.delete_memory, requests.session_ref(request.session_id))
        return pb.DeleteMemoryResponse()
