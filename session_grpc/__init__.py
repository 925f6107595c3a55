"""session-grpc: the conversation store for chat and agent applications."""

__version__ = "0.1.0"
