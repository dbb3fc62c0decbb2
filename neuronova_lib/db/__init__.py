"""The platform database: users, refresh tokens and the audit log (SQLAlchemy 2)."""
