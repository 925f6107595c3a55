"""gRPC servicers: proto in, domain call, proto out. No SQL and no status codes here."""
