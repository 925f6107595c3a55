from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc

from .. import changes, paging, requests, resources
from .._proto.session.v1 import session_pb2 as pb
from .._proto.session.v1 import session_pb2_grpc
from ..domain.changes import FeedQuery
from ..domain.limits import Limits
from ..paging import PageTokens
from ..storage import history, sessions, state
from ..storage.database import Database
from ..storage.routing import ReadRouting
from ..watching import Watches

R = TypeVar("R", pb.WatchSessionResponse, pb.WatchUserSessionsResponse)


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(
        self, db: Database, tokens: PageTokens, limits: Limits, watches: Watches, *, reads: ReadRouting | None = None
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.limits = limits
        self.watches = watches
        self.reads = reads or ReadRouting(db)
        """The heavy reads (listing, the service's stats) run here: on a standby when there is one."""

    async def CreateSession(self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext):
        new = requests.new_session(request, self.limits)
        session = await self.db.run(sessions.create_session, new)
        return pb.CreateSessionResponse(session=resources.session_to_proto(session))

    async def GetSession(self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext):
        ref = requests.session_ref(request.session_id)
        if request.include_scoped_state:
            return resources.get_session_response(await self.db.run(state.get_session_state, ref))
        session = await self.db.run(sessions.get_session, ref)
        return pb.GetSessionResponse(session=resources.session_to_proto(session))

    async def UpdateSession(self, request: pb.UpdateSessionRequest, context: grpc.aio.ServicerContext):
        patch = requests.session_patch(request, self.limits)
        session = await self.db.run(sessions.update_session, patch)
        return pb.UpdateSessionResponse(session=resources.session_to_proto(session))

    async def EndSession(self, request: pb.EndSessionRequest, context: grpc.aio.ServicerContext):
        session = await self.db.run(sessions.end_session, requests.session_ref(request.session_id))
        return pb.EndSessionResponse(session=resources.session_to_proto(session))

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext):
        await self.db.run(sessions.delete_session, requests.session_ref(request.session_id))
        return pb.DeleteSessionResponse()

    async def ListSessions(self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext):
        query = requests.sessions_query(request, self.tokens, self.limits)
        page = await self.reads.run(sessions.list_sessions, query)
        found, token = self.tokens.fit(paging.SESSION_LISTINGS[query.order], query.scope, page, resources.session_to_proto)
        return pb.ListSessionsResponse(sessions=found, next_page_token=token, total_size=page.total)

    async def GetSessionSummary(self, request: pb.GetSessionSummaryRequest, context: grpc.aio.ServicerContext):
        summary = await self.db.run(sessions.session_summary, requests.session_ref(request.session_id))
        return pb.GetSessionSummaryResponse(summary=resources.summary_to_proto(summary))

    async def GetServiceStats(self, request: pb.GetServiceStatsRequest, context: grpc.aio.ServicerContext):
        stats = await self.reads.run(sessions.service_stats)
        return pb.GetServiceStatsResponse(stats=resources.stats_to_proto(stats))

    async def ExpireSessions(self, request: pb.ExpireSessionsRequest, context: grpc.aio.ServicerContext):
        count = await self.db.run(sessions.expire_sessions, requests.idle_for(request))
        return pb.ExpireSessionsResponse(expired_count=count)

    async def ForkSession(self, request: pb.ForkSessionRequest, context: grpc.aio.ServicerContext):
        session = await self.db.run(history.fork_session, requests.fork(request), self.limits.fork_messages)
        return pb.ForkSessionResponse(session=resources.session_to_proto(session))

    async def TruncateSession(self, request: pb.TruncateSessionRequest, context: grpc.aio.ServicerContext):
        rewound = await self.db.run(history.truncate_session, requests.rewind(request))
        return pb.TruncateSessionResponse(
            session=resources.session_to_proto(rewound.session), removed_message_count=rewound.removed_count
        )

    async def UpdateState(self, request: pb.UpdateStateRequest, context: grpc.aio.ServicerContext):
        changed = await self.db.run(state.update_state, requests.state_update(request, self.limits))
        return resources.update_state_response(changed)

    async def GetUserState(self, request: pb.GetUserStateRequest, context: grpc.aio.ServicerContext):
        found = await self.db.run(state.get_user_state, requests.user_state_ref(request))
        return pb.GetUserStateResponse(user_state=resources.user_state_to_proto(found))

    async def GetAppState(self, request: pb.GetAppStateRequest, context: grpc.aio.ServicerContext):
        found = await self.db.run(state.get_app_state, requests.app_name(request))
        return pb.GetAppStateResponse(app_state=resources.app_state_to_proto(found))

    async def WatchSession(
        self, request: pb.WatchSessionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchSessionResponse]:
        async for response in self._feed(changes.session_feed(request, self.limits), pb.WatchSessionResponse):
            yield response

    async def WatchUserSessions(
        self, request: pb.WatchUserSessionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchUserSessionsResponse]:
        async for response in self._feed(changes.user_feed(request, self.limits), pb.WatchUserSessionsResponse):
            yield response

    async def _feed(self, query: FeedQuery, response_type: type[R]) -> AsyncIterator[R]:
        """A watch's events as responses of either Watch RPC (they have the same two fields)."""
        async for event in self.watches.watch(query):
            response = response_type(cursor=event.cursor)
            if event.change is not None:
                response.change.CopyFrom(changes.change_to_proto(event.change))
            yield response
