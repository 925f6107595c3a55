"""The rules of the service, free of gRPC and SQL: records, lifecycle, money, validation, errors."""
