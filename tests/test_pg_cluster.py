"""The throwaway PostgreSQL server the store tests run against."""

from __future__ import annotations

import sqlalchemy as sa

from tests.pg_cluster import PostgresCluster


def test_server_answers_through_sqlalchemy(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version()")).scalar_one()
    finally:
        engine.dispose()
    assert engine.dialect.driver == "psycopg"
    assert version.startswith("PostgreSQL ")


def test_each_database_is_fresh_and_independent(postgres: PostgresCluster, postgres_url: str) -> None:
    first = sa.create_engine(postgres_url)
    second = sa.create_engine(postgres.create_database("independent_of_postgres_url"))
    try:
        assert first.url.database != second.url.database
        assert sa.inspect(first).get_table_names() == []
        with first.begin() as conn:
            conn.execute(sa.text("CREATE TABLE marker (id integer)"))
        assert sa.inspect(first).get_table_names() == ["marker"]
        assert sa.inspect(second).get_table_names() == []
    finally:
        first.dispose()
        second.dispose()
