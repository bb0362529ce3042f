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


def test_upgrade_from_the_first_revision_keeps_jobs_and_models(database_url) -> None:
    """A database with a job and its model at revision 0001 upgrades in place: the rows stay as
    they were, ``model_deleted_at`` starts empty, ``jobs.model_id`` gains its index; and back down."""
    db = Database(database_url)
    migrate.upgrade(db.engine, "20261127_0001")
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO datasets (id, name, source, n_trajectories, n_points, dof, time_stats, "
                             "data, data_sha256, size_bytes) VALUES ('d1', 'ds', '{}', 1, 2, 1, '{}', :b, 'x', 1)"),
                     {"b": b"\x00"})
        conn.execute(sa.text("INSERT INTO jobs (id, kind, status, name, request, request_sha256, dataset_id, "
                             "attempts, max_attempts, cancel_requested, model_id) VALUES ('j1', 'train', "
                             "'succeeded', 'm', '{}', 'x', 'd1', 1, 3, false, 'm1')"))
        conn.execute(sa.text("INSERT INTO models (id, name, version, status, artifact, sha256, size_bytes, config, "
                             "metrics, dataset_id, job_id) VALUES ('m1', 'm', 1, 'ready', :b, 'x', 1, '{}', '{}', "
                             "'d1', 'j1')"), {"b": b"\x01"})
    migrate.upgrade(db.engine)
    assert migrate.is_at_head(db.engine)
    with db.engine.connect() as conn:
        job = conn.execute(sa.text("SELECT status, model_id, model_deleted_at FROM jobs")).one()
        assert tuple(job) == ("succeeded", "m1", None)
        assert conn.execute(sa.text("SELECT id, job_id FROM models")).one() == ("m1", "j1")
    assert "ix_jobs_model_id" in {ix["name"] for ix in sa.inspect(db.engine).get_indexes("jobs")}
    migrate.downgrade(db.engine, "20261127_0001")
    insp = sa.inspect(db.engine)
    assert "model_deleted_at" not in {c["name"] for c in insp.get_columns("jobs")}
    assert "ix_jobs_model_id" not in {ix["name"] for ix in insp.get_indexes("jobs")}
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, model_id FROM jobs")).one() == ("j1", "m1")
    db.dispose()
