from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from .. import paging, requests, resources
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..paging import PageTokens
from ..storage import messages, search
from ..storage.group_commit import GroupCommit
from ..storage.database import Database
from ..storage.routing import ReadRouting


class MessageServicer(session_pb2_grpc.MessageServiceServicer):
    def __init__(
        self, db: Database, tokens: PageTokens, limits: Limits, search_config: str = "simple", *,
        reads: ReadRouting | None = None, appends: GroupCommit | None = None,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.limits = limits
        self.search_config = search_config
        self.reads = reads or ReadRouting(db)
        """The heavy reads (listing, streaming, search) run here: on a standby when there is one."""
        self.appends = appends or GroupCommit(db, enabled=False)
        """AddMessage(s): grouped with concurrent calls when group commit is on."""

    async def AddMessage(self, request: pb.AddMessageRequest, context: grpc.aio.ServicerContext):
        new = requests.new_message(request, self.limits)
        added = await self.appends.append(new.as_batch())
        return pb.AddMessageResponse(
            message=resources.message_to_proto(added.messages[0]), app_name=added.app_name,
            over_budget=bool(added.soft_limits_exceeded), soft_limits_exceeded=added.soft_limits_exceeded,
        )

    async def AddMessages(self, request: pb.AddMessagesRequest, context: grpc.aio.ServicerContext):
        new = requests.new_messages(request, self.limits)
        added = await self.appends.append(new)
        return pb.AddMessagesResponse(
            messages=[resources.message_to_proto(message) for message in added.messages], app_name=added.app_name,
            over_budget=bool(added.soft_limits_exceeded), soft_limits_exceeded=added.soft_limits_exceeded,
        )

    async def ListMessages(self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext):
        query = requests.messages_query(request, self.tokens, self.limits)
        page = await self.reads.run(messages.list_messages, query)
        found, token = self.tokens.fit(paging.MESSAGES, query.scope, page, resources.message_to_proto)
        return pb.ListMessagesResponse(messages=found, next_page_token=token, total_size=page.total)

    async def StreamMessages(
        self, request: pb.StreamMessagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamMessagesResponse]:
        """Pages through the session by sequence, one statement per page (the first finds the session);
        one message per response, or (batched) one page per response within STREAM_BATCH_BYTES."""
        query = requests.stream_query(request, self.limits)
        batched = request.batched
        while True:
            page = await self.reads.run(messages.list_messages, query)
            if batched:
                for run in paging.split_page(page.items, resources.message_to_proto, paging.STREAM_BATCH_BYTES):
                    yield pb.StreamMessagesResponse(messages=run)
            else:
                for message in page.items:
                    yield pb.StreamMessagesResponse(message=resources.message_to_proto(message))
            if not page.more:
                return
            query = replace(query, position=page.items[-1].sequence)

    async def SearchMessages(self, request: pb.SearchMessagesRequest, context: grpc.aio.ServicerContext):
        query = requests.message_search(request, self.tokens, self.search_config, self.limits)
        page = await self.reads.run(search.search_messages, query)
        found, token = self.tokens.fit(paging.SEARCH, query.scope, page, resources.search_hit_to_proto)
        return pb.SearchMessagesResponse(results=found, next_page_token=token)
