//! The job store's tables, created by versioned migrations.
//!
//! `procgate migrate` applies the migrations newer than the schema's
//! version, each in its own transaction, under an advisory lock so that two
//! gateways starting together do not race. `procgate serve --job-store
//! database` only checks the version: a missing schema or one newer than the
//! binary stops it with a message saying what to do.

use crate::error::{Error, Result};

/// The schema version this binary reads and writes.
pub const VERSION: i32 = 1;

/// PostgreSQL migrations, in order; `{s}` is the quoted schema.
const MIGRATIONS: [&str; 1] = ["
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

fn in_schema(sql: &str, schema: &str) -> String {
    sql.replace("{s}", &quote(schema))
}

/// Applies the missing migrations; returns the versions applied.
pub async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<Vec<i32>> {
    let db = |e: tokio_postgres::Error| Error::Unavailable(format!("migrating the job store: {e}"));
    let tx = client.transaction().await.map_err(db)?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(7041990)")
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
        if version <= current {
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
             `procgate migrate --database-url …` once, then start procgate again"
        ))),
        Some(v) if v < VERSION => Err(Error::Unavailable(format!(
            "the job store is at version {v}, this procgate needs {VERSION}: run `procgate migrate`"
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

    #[test]
    fn schema_names_are_quoted_into_the_ddl() {
        let ddl = in_schema(MIGRATIONS[0], r#"ops"x"#);
        assert!(ddl.contains(r#"CREATE TABLE IF NOT EXISTS "ops""x".procgate_jobs"#));
        assert!(!ddl.contains("{s}"));
        assert_eq!(MIGRATIONS.len() as i32, VERSION);
    }
}
