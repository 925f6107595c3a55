from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from .. import convert
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..authorization import Guard
from ..domain.limits import Limits
from ..page_tokens import PageTokens
from ..storage import messages, sessions
from ..storage.database import Database


class MessageServicer(session_pb2_grpc.MessageServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens, limits: Limits, guard: Guard) -> None:
        self.db = db
        self.guard = guard
        self.tokens = tokens
        self.limits = limits

    async def AddMessage(self, request: pb.AddMessageRequest, context: grpc.aio.ServicerContext):
        new = convert.new_message(request, self.limits)
        await self.guard.owns(new.session_id)
        message = await self.db.run_driver(messages.add_message, new)
        return pb.AddMessageResponse(message=convert.message_to_proto(message))

    async def ListMessages(self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext):
        query = convert.messages_query(request, self.tokens, self.limits)
        await self.guard.owns(query.session_id)
        page, last_sequence, total = await self.db.run_driver(
            messages.list_messages, query.session_id, query.page_size, query.position, query.descending
        )
        protos = convert.fit_page(page, convert.message_to_proto)
        if len(protos) < len(page):
            last_sequence = page[len(protos) - 1].sequence
        return pb.ListMessagesResponse(
            messages=protos,
            next_page_token=convert.messages_page_token(query, last_sequence, self.tokens),
            total_size=total,
        )

    async def StreamMessages(
        self, request: pb.StreamMessagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamMessagesResponse]:
        """Pages through the session by sequence, one short transaction per page."""
        query = convert.stream_query(request, self.limits)
        await self.guard.owns(query.session_id)
        await self.db.run_driver(sessions.get_session, query.session_id)
        after = query.position or 0
        while True:
            page = await self.db.run_driver(messages.messages_page, query.session_id, after, query.page_size)
            for message in page:
                yield pb.StreamMessagesResponse(message=convert.message_to_proto(message))
            if len(page) < query.page_size:
                return
            after = page[-1].sequence
