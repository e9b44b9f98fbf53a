"""The inference log: every prediction a gateway returns, and the feedback that joins it.

The A/B analysis (``mnist_mlops.registry.abtest``) reads it; gateways write it. This package owns
its schema and every statement run against it (``schema``, ``writer``, ``queries``): no SQL lives
anywhere else. It is a SQLAlchemy database URL: a SQLite file by default, PostgreSQL for a team.
"""
