from __future__ import annotations

import grpc

from .. import accounting
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..storage import budgets, usage
from ..storage.database import Database


class UsageServicer(session_pb2_grpc.UsageServiceServicer):
    def __init__(self, db: Database, limits: Limits) -> None:
        self.db = db
        self.limits = limits

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext):
        found = await self.db.run(usage.get_usage, accounting.usage_query(request, self.limits))
        return accounting.usage_to_proto(found)

    async def GetBudget(self, request: pb.GetBudgetRequest, context: grpc.aio.ServicerContext):
        budget = await self.db.run(budgets.get_budget, accounting.budget_of(request, self.limits))
        return accounting.budget_use_to_proto(budget)

    async def SetBudget(self, request: pb.SetBudgetRequest, context: grpc.aio.ServicerContext):
        ref, limits = accounting.budget_to_set(request, self.limits)
        budget = await self.db.run(budgets.set_budget, ref, limits)
        return pb.SetBudgetResponse(budget=accounting.budget_to_proto(budget))

    async def DeleteBudget(self, request: pb.DeleteBudgetRequest, context: grpc.aio.ServicerContext):
        deleted = await self.db.run(budgets.delete_budget, accounting.budget_of(request, self.limits))
        return pb.DeleteBudgetResponse(deleted=deleted)
