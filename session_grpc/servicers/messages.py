from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from .. import convert
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.limits import Limits
from ..page_tokens import PageTokens
from ..storage import messages
from ..storage.database import Database


class MessageServicer(session_pb2_grpc.MessageServiceServicer):
    def __init__(self, db: Database, tokens: PageTokens, limits: Limits) -> None:
        self.db = db
        self.tokens = tokens
        self.limits = limits

    async def AddMessage(self, request: pb.AddMessageRequest, context: grpc.aio.ServicerContext):
        new = convert.new_message(request, self.limits)
        message = await self.db.run_driver(messages.add_message, new)
        return pb.AddMessageResponse(message=convert.message_to_proto(message))

    async def ListMessages(self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext):
        query = convert.messages_query(request, self.tokens, self.limits)
        page, last_sequence, total = await self.db.run_driver(
            messages.list_messages, query.session, query.page_size, query.position, query.descending
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
        """Pages through the session by sequence, one statement per page (the first finds the session)."""
        query = convert.stream_query(request, self.limits)
        after: int | None = query.position
        while after is not None:
            page, after, _ = await self.db.run_driver(messages.list_messages, query.session, query.page_size, after)
            for message in page:
                yield pb.StreamMessagesResponse(message=convert.message_to_proto(message))
