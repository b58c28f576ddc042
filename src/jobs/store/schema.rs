//! The job store's tables, created by versioned migrations.
//!
//! `procgate migrate` applies the migrations newer than the schema's
//! version, each in its own transaction, under an advisory lock so that two
//! gateways starting together do not race. `procgate serve --job-store
//! database` only checks the version: a missing schema or one newer than the
//! binary stops it with a message saying what to do.

use crate::error::{Error, Result};

/// The schema version this binary reads and writes.
pub const VERSION: i32 = 4;

/// PostgreSQL migrations, in order; `{s}` is the quoted schema.
const MIGRATIONS: [&str; 4] = ["
CREATE TABLE IF NOT EXISTS {s}.procgate_instances (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.procgate_jobs (
    id               uuid PRIMARY KEY,
    seq              bigserial UNIQUE,
    owner            text NOT NULL DEFAULT '',
    request_id       text,
    procedure        text NOT NULL,
    call             jsonb NOT NULL,
    state            text NOT NULL,
    progress         integer NOT NULL DEFAULT 0,
    progress_message text NOT NULL DEFAULT '',
    messages         jsonb NOT NULL DEFAULT '{\"lines\": [], \"dropped\": 0}',
    outputs          jsonb,
    error            jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    instance_id      uuid,
    create_time      timestamptz NOT NULL,
    start_time       timestamptz,
    end_time         timestamptz,
    version          bigint NOT NULL DEFAULT 0,
    UNIQUE (owner, request_id)
);
CREATE INDEX IF NOT EXISTS procgate_jobs_pending ON {s}.procgate_jobs (seq) WHERE state = 'PENDING';
CREATE INDEX IF NOT EXISTS procgate_jobs_running ON {s}.procgate_jobs (instance_id) WHERE state = 'RUNNING';
CREATE INDEX IF NOT EXISTS procgate_jobs_ended ON {s}.procgate_jobs (end_time) WHERE end_time IS NOT NULL;
", "
-- Version 2: one store-wide revision for every change, the change feed and
-- its tombstones. Existing jobs get revisions in their submission order.
-- start_revision is the revision at which a job became RUNNING, so that a
-- reader who missed that write still replays the state change.
CREATE SEQUENCE {s}.procgate_revision;
ALTER TABLE {s}.procgate_jobs ADD COLUMN revision bigint, ADD COLUMN create_revision bigint,
  ADD COLUMN start_revision bigint;
UPDATE {s}.procgate_jobs j SET revision = o.r, create_revision = o.r
  FROM (SELECT id, row_number() OVER (ORDER BY seq) AS r FROM {s}.procgate_jobs) o WHERE j.id = o.id;
SELECT setval('{s}.procgate_revision', coalesce((SELECT max(revision) FROM {s}.procgate_jobs), 0) + 1, false);
ALTER TABLE {s}.procgate_jobs ALTER COLUMN revision SET NOT NULL,
  ALTER COLUMN revision SET DEFAULT nextval('{s}.procgate_revision'),
  ALTER COLUMN create_revision SET NOT NULL,
  ALTER COLUMN create_revision SET DEFAULT nextval('{s}.procgate_revision'),
  ADD UNIQUE (create_revision),
  DROP COLUMN seq, DROP COLUMN version;
CREATE INDEX procgate_jobs_revision ON {s}.procgate_jobs (revision);
CREATE INDEX procgate_jobs_pending_fifo ON {s}.procgate_jobs (create_revision) WHERE state = 'PENDING';
CREATE TABLE {s}.procgate_tombstones (
    id         uuid PRIMARY KEY,
    owner      text NOT NULL,
    procedure  text NOT NULL,
    state      text NOT NULL,
    revision   bigint NOT NULL UNIQUE,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX procgate_tombstones_age ON {s}.procgate_tombstones (deleted_at);
CREATE TABLE {s}.procgate_feed (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    purged_through bigint NOT NULL DEFAULT 0
);
INSERT INTO {s}.procgate_feed DEFAULT VALUES;
", "
-- Version 3: a job's result rows past its inline part, in chunks, so that
-- any instance serves them; they go with their job.
CREATE TABLE {s}.procgate_job_results (
    job_id    uuid NOT NULL REFERENCES {s}.procgate_jobs (id) ON DELETE CASCADE,
    output    text NOT NULL,
    chunk     integer NOT NULL,
    first_row bigint NOT NULL,
    row_count integer NOT NULL,
    size      bigint NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (job_id, output, chunk)
);
", "
-- Version 4: retries, expiry and schedules. A job keeps its retry policy,
-- its attempt and the errors of the failed ones, when its next attempt may
-- start, its expiry, and the schedule tick it stands for: one job per tick.
ALTER TABLE {s}.procgate_jobs ADD COLUMN schedule_id uuid, ADD COLUMN scheduled_time timestamptz,
  ADD COLUMN retry jsonb, ADD COLUMN expire_time timestamptz,
  ADD COLUMN attempt integer NOT NULL DEFAULT 1, ADD COLUMN attempt_errors jsonb,
  ADD COLUMN not_before timestamptz;
CREATE UNIQUE INDEX procgate_jobs_tick ON {s}.procgate_jobs (schedule_id, scheduled_time)
  WHERE schedule_id IS NOT NULL;
CREATE INDEX procgate_jobs_expiring ON {s}.procgate_jobs (expire_time)
  WHERE state = 'PENDING' AND expire_time IS NOT NULL;
ALTER TABLE {s}.procgate_tombstones ADD COLUMN schedule_id uuid;
CREATE TABLE {s}.procgate_schedules (
    id            uuid PRIMARY KEY,
    seq           bigserial UNIQUE,
    owner         text NOT NULL DEFAULT '',
    name          text NOT NULL,
    cron          text NOT NULL,
    time_zone     text NOT NULL,
    call          jsonb NOT NULL,
    paused        boolean NOT NULL DEFAULT false,
    overlap       text NOT NULL,
    retry         jsonb,
    next_run_time timestamptz,
    last_run_time timestamptz,
    last_job_id   uuid,
    skipped_ticks bigint NOT NULL DEFAULT 0,
    create_time   timestamptz NOT NULL,
    UNIQUE (owner, name)
);
CREATE INDEX procgate_schedules_due ON {s}.procgate_schedules (next_run_time) WHERE NOT paused;
"];

const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS {s}.procgate_schema (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Double-quotes a schema name for statement text.
pub fn quote(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// Puts the schema into statement text: `{s}` as an identifier, and `'{s}`
/// (inside a string literal, as nextval's argument) with its quotes doubled.
pub fn in_schema(sql: &str, schema: &str) -> String {
    let quoted = quote(schema);
    sql.replace("'{s}", &format!("'{}", quoted.replace('\'', "''")))
        .replace("{s}", &quoted)
}

/// Applies the missing migrations; returns the versions applied.
pub async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<Vec<i32>> {
    migrate_to(client, schema, VERSION).await
}

/// Applies the missing migrations up to version `target`.
async fn migrate_to(
    client: &mut tokio_postgres::Client,
    schema: &str,
    target: i32,
) -> Result<Vec<i32>> {
    let db = |e: tokio_postgres::Error| Error::Unavailable(format!("migrating the job store: {e}"));
    let tx = client.transaction().await.map_err(db)?;
    // IF NOT EXISTS notices ("already exists, skipping") are not news.
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; SELECT pg_advisory_xact_lock(7041990)",
    )
    .await
    .map_err(db)?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)))
        .await
        .map_err(db)?;
    tx.batch_execute(&in_schema(VERSION_TABLE, schema))
        .await
        .map_err(db)?;
    let current: i32 = tx
        .query_one(
            &in_schema(
                "SELECT coalesce(max(version), 0) FROM {s}.procgate_schema",
                schema,
            ),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let mut applied = Vec::new();
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = index as i32 + 1;
        if version <= current || version > target {
            continue;
        }
        tx.batch_execute(&in_schema(migration, schema))
            .await
            .map_err(db)?;
        tx.execute(
            &in_schema(
                "INSERT INTO {s}.procgate_schema (version) VALUES ($1)",
                schema,
            ),
            &[&version],
        )
        .await
        .map_err(db)?;
        applied.push(version);
    }
    tx.commit().await.map_err(db)?;
    Ok(applied)
}

/// Checks that the store's schema is the one this binary speaks.
pub async fn check(client: &tokio_postgres::Client, schema: &str) -> Result<()> {
    let found = client
        .query_opt(
            &in_schema("SELECT max(version) FROM {s}.procgate_schema", schema),
            &[],
        )
        .await;
    let version: Option<i32> = match found {
        Ok(row) => row.and_then(|r| r.get(0)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(e) => return Err(Error::Unavailable(format!("checking the job store: {e}"))),
    };
    match version {
        Some(VERSION) => Ok(()),
        None => Err(Error::Unavailable(format!(
            "the job store's tables are missing in schema {schema:?}: run \
             `procgate migrate --database-url … --job-store-schema {schema}` once, then start \
             procgate again"
        ))),
        Some(v) if v < VERSION => Err(Error::Unavailable(format!(
            "the job store is at version {v}, this procgate needs {VERSION}: run `procgate migrate \
             --database-url … --job-store-schema {schema}`"
        ))),
        Some(v) => Err(Error::Unavailable(format!(
            "the job store is at version {v}, newer than this procgate ({VERSION}): \
             upgrade procgate before starting it"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{EmbeddedOptions, EmbeddedPostgres};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_2_gives_existing_jobs_revisions_in_submission_order() {
        let db = tokio::task::spawn_blocking(|| {
            EmbeddedPostgres::start(&EmbeddedOptions {
                ..Default::default()
            })
        })
        .await
        .unwrap()
        .expect("a test PostgreSQL");
        let (mut client, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        assert_eq!(migrate_to(&mut client, "ops", 1).await.unwrap(), [1]);
        client
            .batch_execute(
                "INSERT INTO ops.procgate_jobs (id, procedure, call, state, create_time)
                 SELECT gen_random_uuid(), 'p' || n, '{}', 'COMPLETED', now() - n * interval '1 s'
                   FROM generate_series(1, 3) n",
            )
            .await
            .unwrap();
        let before: Vec<String> = client
            .query("SELECT procedure FROM ops.procgate_jobs ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();

        assert_eq!(migrate(&mut client, "ops").await.unwrap(), [2, 3, 4]);
        let after = client
            .query(
                "SELECT procedure, create_revision, revision FROM ops.procgate_jobs \
                 ORDER BY create_revision",
                &[],
            )
            .await
            .unwrap();
        let order: Vec<String> = after.iter().map(|r| r.get(0)).collect();
        assert_eq!(order, before, "submission order is kept");
        let revisions: Vec<(i64, i64)> = after.iter().map(|r| (r.get(1), r.get(2))).collect();
        assert_eq!(revisions, [(1, 1), (2, 2), (3, 3)]);
        let next: i64 = client
            .query_one("SELECT nextval('ops.procgate_revision')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(next, 4, "new changes come after the existing jobs");
        check(&client, "ops").await.unwrap();
    }

    #[test]
    fn schema_names_are_quoted_into_the_ddl() {
        let ddl = in_schema(MIGRATIONS[0], r#"ops"x"#);
        assert!(ddl.contains(r#"CREATE TABLE IF NOT EXISTS "ops""x".procgate_jobs"#));
        assert!(!ddl.contains("{s}"));
        assert_eq!(MIGRATIONS.len() as i32, VERSION);
        let v2 = in_schema(MIGRATIONS[1], "it's");
        assert!(v2.contains(r#"setval('"it''s".procgate_revision'"#), "{v2}");
        assert!(v2.contains(r#"ALTER TABLE "it's".procgate_jobs"#));
    }
}
