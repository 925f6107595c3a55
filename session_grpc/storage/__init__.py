"""SQLAlchemy models, queries and transactions. Everything that speaks SQL lives here."""
