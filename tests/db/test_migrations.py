"""Alembic: `upgrade head` yields exactly the ORM schema; `downgrade base` leaves nothing behind."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.db import migrate
from app.db.models import Base
from app.db.session import Database


def test_upgrade_head_matches_the_orm_and_downgrade_base_is_clean(database_url) -> None:
    db = Database(database_url)
    assert migrate.current_revision(db.engine) is None
    migrate.upgrade(db.engine)
    assert migrate.is_at_head(db.engine)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    names = set(sa.inspect(db.engine).get_table_names())
    assert {"datasets", "jobs", "models", "alembic_version"} <= names
    migrate.downgrade(db.engine, "base")
    assert set(sa.inspect(db.engine).get_table_names()) == {"alembic_version"}
    assert migrate.current_revision(db.engine) is None
    migrate.upgrade(db.engine)  # and back up again from a clean base
    assert migrate.is_at_head(db.engine)
    db.dispose()


def test_constraints_follow_the_naming_convention(database_url) -> None:
    db = Database(database_url)
    migrate.upgrade(db.engine)
    insp = sa.inspect(db.engine)
    uniques = {u["name"] for u in insp.get_unique_constraints("models")}
    assert {"uq_models_name_version", "uq_models_job_id"} <= uniques
    fks = {f["name"] for f in insp.get_foreign_keys("jobs")}
    assert fks == {"fk_jobs_dataset_id_datasets"}
    assert insp.get_pk_constraint("datasets")["name"] in ("pk_datasets", None)  # SQLite does not name PKs
    db.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path}/wal.db")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()
