//! The Oracle job table (`--job-store database` on an Oracle backend): the
//! same rows, guards, revisions and change feed as the PostgreSQL store
//! (statements in [`sql`]), behind the same [`JobTable`] trait, so the one
//! engine runs on it unchanged.
//!
//! The oracle crate blocks, so every statement runs on a `spawn_blocking`
//! thread with a connection of a small r2d2 pool of the table's own (these
//! are short bookkeeping statements, not procedure calls). Oracle has no
//! LISTEN/NOTIFY that a client can use without extra grants, so the engine
//! hears its own announcements and other instances learn of changes by
//! polling (`--job-store-poll-interval`): a watcher on B sees a
//! change on A within that interval plus a second.
//!
//! `procgate migrate` creates the tables ([`migrate`]); `serve` only checks
//! that they are there.

pub mod sql;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oracle::sql_type::{OracleType, ToSql};
use r2d2_oracle::OracleConnectionManager;
use serde_json::Value as Json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::codec;
use crate::backend::oracle::url;
use crate::error::{Error, Result};
use crate::jobs::feed::{self, Tombstone, WatchFilter};
use crate::jobs::lifecycle::{self, Cancel};
use crate::jobs::limits::ClaimRules;
use crate::jobs::table::{
    Announcement, CancelOutcome, ChangedJob, Changes, JobTable, ListFilter, Start,
};
use crate::jobs::{JobSnapshot, JobState};

type Pool = r2d2::Pool<OracleConnectionManager>;
type Binds<'a> = Vec<(&'a str, &'a dyn ToSql)>;

pub struct OracleTable {
    pool: Pool,
    schema: String,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the job store: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("a stored job could not be read: {e}"))
}

/// Creates the job table's objects in `schema` when they are missing
/// (what `procgate migrate` does for an Oracle URL); returns the versions
/// applied. Oracle tables have no earlier version to migrate from.
pub async fn migrate(database_url: &str, schema: &str) -> Result<Vec<i32>> {
    let table = OracleTable::open_unchecked(database_url, schema, 1)?;
    table
        .blocking(|conn, schema| {
            if tables_exist(conn, &schema)? {
                return Ok(Vec::new());
            }
            for create in [
                sql::CREATE_REVISION,
                sql::CREATE_JOBS,
                sql::CREATE_INSTANCES,
                sql::CREATE_TOMBSTONES,
                sql::CREATE_FEED,
            ] {
                conn.execute(&sql::in_schema(create, &schema), &[])
                    .map_err(unavailable)?;
            }
            conn.execute(
                &sql::in_schema("INSERT INTO {s}.PROCGATE_FEED (ID) VALUES (1)", &schema),
                &[],
            )
            .map_err(unavailable)?;
            conn.commit().map_err(unavailable)?;
            Ok(vec![super::schema::VERSION])
        })
        .await
}

/// Whether the version-2 job table is there (its START_REVISION column).
fn tables_exist(conn: &oracle::Connection, schema: &str) -> Result<bool> {
    let probe = sql::in_schema(
        "SELECT START_REVISION FROM {s}.PROCGATE_JOBS WHERE 1 = 0",
        schema,
    );
    match conn.query(&probe, &[]) {
        Ok(_) => Ok(true),
        // ORA-00942 table or view does not exist, ORA-00904 invalid identifier.
        Err(e) if matches!(e.db_error().map(|d| d.code()), Some(942 | 904)) => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

impl OracleTable {
    /// Connects and checks that the job table's objects are there.
    pub async fn open(database_url: &str, schema: &str, connections: u32) -> Result<OracleTable> {
        let table = OracleTable::open_unchecked(database_url, schema, connections)?;
        let present = table
            .blocking(|conn, schema| tables_exist(conn, &schema))
            .await?;
        if !present {
            return Err(Error::Unavailable(format!(
                "the job store's tables are missing in schema {schema}: run `procgate migrate \
                 --database-url … --job-store-schema {schema}` against this database first"
            )));
        }
        Ok(table)
    }

    fn open_unchecked(database_url: &str, schema: &str, connections: u32) -> Result<OracleTable> {
        let target = url::parse(database_url, |name| std::env::var(name).ok())?;
        crate::backend::oracle::client::check_client_library()?;
        let connector =
            oracle::Connector::new(&target.user, &target.password, &target.connect_string);
        let pool = r2d2::Pool::builder()
            .max_size(connections)
            .min_idle(Some(0))
            .build_unchecked(OracleConnectionManager::from_connector(connector));
        // PostgreSQL's default schema means the user's own one here.
        let schema = match schema {
            "public" => target.user.to_uppercase(),
            other => other.to_string(),
        };
        Ok(OracleTable { pool, schema })
    }

    /// Runs `work` with a pooled connection on a blocking thread; what it
    /// leaves uncommitted is rolled back.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&oracle::Connection, String) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (pool, schema) = (self.pool.clone(), self.schema.clone());
        tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(unavailable)?;
            let done = work(&conn, schema);
            if done.is_err() {
                let _ = conn.rollback();
            }
            done
        })
        .await
        .unwrap_or_else(|_| Err(Error::Internal("a job store thread panicked".into())))
    }

    /// The jobs a query returns, in its order.
    async fn jobs(&self, statement: &'static str, binds: Vec<Bound>) -> Result<Vec<ChangedJob>> {
        self.blocking(move |conn, schema| query_jobs(conn, &schema, statement, &binds))
            .await
    }

    /// Runs a statement of one row's change and commits; returns its bind
    /// `out` (a row count or a flag), when it has one.
    async fn change(
        &self,
        statement: &'static str,
        binds: Vec<Bound>,
        out: Option<&'static str>,
    ) -> Result<i64> {
        self.blocking(move |conn, schema| {
            let mut stmt = conn
                .statement(&sql::in_schema(statement, &schema))
                .build()
                .map_err(unavailable)?;
            let out_type = OracleType::Int64;
            with_binds(&binds, |named| {
                let mut named = named.to_vec();
                if let Some(out) = out {
                    named.push((out, &out_type));
                }
                stmt.execute_named(&named)
            })
            .map_err(unavailable)?;
            let value = match out {
                Some(out) => stmt
                    .bind_value::<_, Option<i64>>(out)
                    .map_err(unavailable)?,
                None => Some(stmt.row_count().map_err(unavailable)? as i64),
            };
            conn.commit().map_err(unavailable)?;
            Ok(value.unwrap_or(0))
        })
        .await
    }
}

/// A bind value owned by the closure that runs on the blocking thread.
enum Value {
    Text(Option<String>),
    Clob(Option<String>),
    Raw(Vec<u8>),
    Int(Option<i64>),
    Time(Option<DateTime<Utc>>),
}

type Bound = (&'static str, Value);

/// Runs `run` with the binds as the driver takes them: JSON documents as
/// CLOBs, whatever their size, the rest by their Rust type.
fn with_binds<R>(binds: &[Bound], run: impl FnOnce(&[(&str, &dyn ToSql)]) -> R) -> R {
    let clob = OracleType::CLOB;
    let clobs: Vec<(&Option<String>, &OracleType)> = binds
        .iter()
        .filter_map(|(_, value)| match value {
            Value::Clob(text) => Some((text, &clob)),
            _ => None,
        })
        .collect();
    let mut next_clob = clobs.iter();
    let named: Binds = binds
        .iter()
        .map(|(name, value)| {
            let value: &dyn ToSql = match value {
                Value::Text(v) => v,
                Value::Clob(_) => next_clob.next().expect("one per CLOB"),
                Value::Raw(v) => v,
                Value::Int(v) => v,
                Value::Time(v) => v,
            };
            (*name, value)
        })
        .collect();
    run(&named)
}

fn text(value: impl Into<String>) -> Value {
    Value::Text(Some(value.into()))
}

fn clob(json: &Json) -> Value {
    Value::Clob(Some(json.to_string()))
}

fn time(time: Option<SystemTime>) -> Value {
    Value::Time(time.map(DateTime::<Utc>::from))
}

fn raw(id: &Uuid) -> Value {
    Value::Raw(id.as_bytes().to_vec())
}

/// The fields every write of a job's state binds.
fn state_binds(job: &JobSnapshot) -> Vec<Bound> {
    vec![
        ("id", raw(&job.id)),
        ("state", text(job.state.name())),
        ("progress", Value::Int(Some(job.progress.into()))),
        ("message", text(job.progress_message.as_ref())),
        ("messages", clob(&codec::messages_to_json(&job.messages))),
        (
            "outputs",
            Value::Clob(
                job.outputs
                    .as_deref()
                    .map(|o| codec::outputs_to_json(o).to_string()),
            ),
        ),
        (
            "error",
            Value::Clob(
                job.error
                    .as_deref()
                    .map(|e| codec::error_to_json(e).to_string()),
            ),
        ),
        (
            "cancel_requested",
            Value::Int(Some(job.cancel_requested.into())),
        ),
        ("start_time", time(job.start_time)),
        ("end_time", time(job.end_time)),
    ]
}

/// The rows a query returns.
fn rows<'c>(
    conn: &'c oracle::Connection,
    schema: &str,
    statement: &str,
    binds: &[Bound],
) -> Result<oracle::ResultSet<'c, oracle::Row>> {
    with_binds(binds, |named| {
        conn.query_named(&sql::in_schema(statement, schema), named)
    })
    .map_err(unavailable)
}

fn query_jobs(
    conn: &oracle::Connection,
    schema: &str,
    statement: &str,
    binds: &[Bound],
) -> Result<Vec<ChangedJob>> {
    rows(conn, schema, statement, binds)?
        .map(|row| from_row(&row.map_err(unavailable)?))
        .collect()
}

/// Locks a job's row, lets the lifecycle decide, and writes what it
/// decided in the same transaction (not committed). Returns the job and
/// whether it was written.
fn lock_and_write(
    conn: &oracle::Connection,
    schema: &str,
    id: &Uuid,
    decide: impl FnOnce(&mut JobSnapshot) -> Result<bool>,
) -> Result<Option<(JobSnapshot, bool)>> {
    let locked = query_jobs(conn, schema, sql::LOCK, &[("id", raw(id))])?;
    let Some(ChangedJob { mut job, .. }) = locked.into_iter().next() else {
        return Ok(None);
    };
    let write = decide(&mut job)?;
    if write {
        let mut stmt = conn
            .statement(&sql::in_schema(sql::WRITE, schema))
            .build()
            .map_err(unavailable)?;
        let mut binds = state_binds(&job);
        // Empty RAW is NULL: the row keeps its instance.
        binds.push(("instance", Value::Raw(Vec::new())));
        let revision_type = OracleType::Int64;
        with_binds(&binds, |named| {
            let mut named = named.to_vec();
            named.push(("revision", &revision_type));
            stmt.execute_named(&named)
        })
        .map_err(unavailable)?;
        job.revision = stmt.bind_value::<_, i64>("revision").map_err(unavailable)? as u64;
    }
    Ok(Some((job, write)))
}

fn from_row(row: &oracle::Row) -> Result<ChangedJob> {
    let get_text = |i: usize| -> Result<Option<String>> { row.get(i).map_err(corrupt) };
    let get_json = |i: usize| -> Result<Option<Json>> {
        get_text(i)?
            .map(|t| serde_json::from_str(&t).map_err(corrupt))
            .transpose()
    };
    let get_int = |i: usize| -> Result<Option<i64>> { row.get(i).map_err(corrupt) };
    let get_time = |i: usize| -> Result<Option<SystemTime>> {
        Ok(row
            .get::<_, Option<DateTime<Utc>>>(i)
            .map_err(corrupt)?
            .map(SystemTime::from))
    };
    let id: Vec<u8> = row.get(0).map_err(corrupt)?;
    let state = get_text(4)?.unwrap_or_default();
    let call = get_json(3)?.ok_or_else(|| corrupt("no call"))?;
    let messages = get_json(7)?.unwrap_or_else(|| codec::messages_to_json(&Default::default()));
    let job = JobSnapshot {
        id: Uuid::from_slice(&id).map_err(corrupt)?,
        state: JobState::parse(&state).ok_or_else(|| corrupt(format!("unknown state {state}")))?,
        progress: get_int(5)?.unwrap_or(0).clamp(0, 100) as u32,
        progress_message: get_text(6)?.unwrap_or_default().into(),
        create_time: get_time(11)?.unwrap_or(SystemTime::UNIX_EPOCH),
        start_time: get_time(12)?,
        end_time: get_time(13)?,
        outputs: get_json(8)?
            .map(|o| codec::outputs_from_json(&o).map(Arc::new))
            .transpose()
            .map_err(corrupt)?,
        error: get_json(9)?
            .map(|e| codec::error_from_json(&e).map(Box::new))
            .transpose()
            .map_err(corrupt)?,
        cancel_requested: get_int(10)?.unwrap_or(0) != 0,
        call: Arc::new(codec::call_from_json(&call).map_err(corrupt)?),
        messages: codec::messages_from_json(&messages).map_err(corrupt)?,
        request_id: get_text(2)?.map(Into::into),
        owner: get_text(1)?.unwrap_or_default().into(),
        revision: get_int(14)?.unwrap_or(0) as u64,
        create_revision: get_int(15)?.unwrap_or(0) as u64,
        spool: None,
        // This table keeps no plans: its jobs are plain (see `keeps_plans`).
        plan: None,
        attempt: 1,
        retries: None,
    };
    Ok(ChangedJob {
        job,
        start_revision: get_int(16)?.map(|r| r as u64),
    })
}

fn tombstones(
    conn: &oracle::Connection,
    schema: &str,
    statement: &str,
    binds: &[Bound],
) -> Result<Vec<Tombstone>> {
    rows(conn, schema, statement, binds)?
        .map(|row| {
            let row = row.map_err(unavailable)?;
            let id: Vec<u8> = row.get(0).map_err(corrupt)?;
            let state: String = row.get(3).map_err(corrupt)?;
            Ok(Tombstone {
                id: Uuid::from_slice(&id).map_err(corrupt)?,
                owner: row
                    .get::<_, Option<String>>(1)
                    .map_err(corrupt)?
                    .unwrap_or_default()
                    .into(),
                procedure: row.get(2).map_err(corrupt)?,
                state: JobState::parse(&state)
                    .ok_or_else(|| corrupt(format!("unknown state {state}")))?,
                revision: row.get::<_, i64>(4).map_err(corrupt)? as u64,
                deleted_at: row.get::<_, DateTime<Utc>>(5).map_err(corrupt)?.into(),
                schedule_id: None,
            })
        })
        .collect()
}

fn revisions(conn: &oracle::Connection, schema: &str) -> Result<(u64, u64)> {
    let row = conn
        .query_row(&sql::in_schema(sql::REVISIONS, schema), &[])
        .map_err(unavailable)?;
    let (current, purged): (i64, i64) = row.get_as().map_err(corrupt)?;
    Ok((current as u64, purged as u64))
}

fn owner_bind(owner: Option<&str>) -> Value {
    Value::Text(owner.map(str::to_string))
}

fn procedure_bind(procedure: Option<&str>) -> Value {
    Value::Text(procedure.map(str::to_string))
}

fn jobs_of(changed: Vec<ChangedJob>) -> Vec<JobSnapshot> {
    changed.into_iter().map(|c| c.job).collect()
}

#[async_trait]
impl JobTable for OracleTable {
    fn durable(&self) -> bool {
        true
    }

    async fn insert(&self, job: &JobSnapshot) -> Result<JobSnapshot> {
        let binds = vec![
            ("id", raw(&job.id)),
            ("owner", text(job.owner.as_ref())),
            (
                "request_id",
                Value::Text(job.request_id.as_deref().map(Into::into)),
            ),
            ("procedure", text(job.call.display_name.as_str())),
            ("call", clob(&codec::call_to_json(&job.call))),
            ("message", text(job.progress_message.as_ref())),
            ("create_time", time(Some(job.create_time))),
        ];
        self.change(sql::INSERT, binds, Some("inserted")).await?;
        let stored = match job.request_id.as_deref() {
            Some(request_id) => self.find_by_request_id(&job.owner, request_id).await?,
            None => self.get(&job.id).await?,
        };
        stored.ok_or_else(|| Error::Internal("an inserted job vanished".into()))
    }

    async fn find_by_request_id(
        &self,
        owner: &str,
        request_id: &str,
    ) -> Result<Option<JobSnapshot>> {
        let binds = vec![("owner", text(owner)), ("request_id", text(request_id))];
        Ok(jobs_of(self.jobs(sql::FIND_BY_REQUEST_ID, binds).await?)
            .into_iter()
            .next())
    }

    async fn pending(&self) -> Result<u64> {
        self.blocking(|conn, schema| {
            let count: i64 = conn
                .query_row_as(&sql::in_schema(sql::PENDING_COUNT, &schema), &[])
                .map_err(unavailable)?;
            Ok(count as u64)
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        self.blocking(|conn, schema| {
            let rows = conn
                .query_as::<(String, i64)>(&sql::in_schema(sql::STATE_COUNTS, &schema), &[])
                .map_err(unavailable)?;
            let mut counts = Vec::new();
            for row in rows {
                let (state, count) = row.map_err(unavailable)?;
                if let Some(state) = JobState::parse(&state) {
                    counts.push((state, count as u64));
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn get(&self, id: &Uuid) -> Result<Option<JobSnapshot>> {
        let found = self.jobs(sql::GET, vec![("id", raw(id))]).await?;
        Ok(jobs_of(found).into_iter().next())
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<JobSnapshot>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.extend(self.get(id).await?);
        }
        Ok(jobs)
    }

    async fn list(
        &self,
        filter: &ListFilter,
        owner: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobSnapshot>> {
        if filter.schedule_id.is_some() {
            // Its jobs have no schedule.
            return Ok(Vec::new());
        }
        let states: Vec<&str> = filter.states.iter().map(|s| s.name()).collect();
        let binds = vec![
            (
                "before",
                Value::Int(Some(before.min(i64::MAX as u64) as i64)),
            ),
            (
                "states",
                Value::Text((!states.is_empty()).then(|| states.join(","))),
            ),
            ("procedure", procedure_bind(filter.procedure.as_deref())),
            ("owner", owner_bind(owner)),
            (
                "limit",
                Value::Int(Some(limit.min(i64::MAX as usize) as i64)),
            ),
        ];
        Ok(jobs_of(self.jobs(sql::LIST_PAGE, binds).await?))
    }

    /// Its jobs are plain (no backoff, expiry or schedule) and procedure
    /// limits are refused at start with this table: the rules add nothing.
    async fn claim(&self, instance: &Uuid, _rules: &ClaimRules) -> Result<Option<JobSnapshot>> {
        let instance = instance.as_bytes().to_vec();
        let claimed = self
            .blocking(move |conn, schema| {
                let mut stmt = conn
                    .statement(&sql::in_schema(sql::CLAIM, &schema))
                    .build()
                    .map_err(unavailable)?;
                stmt.execute_named(&[
                    ("instance", &instance),
                    ("message", &lifecycle::CLAIMED),
                    ("claimed", &OracleType::Raw(16)),
                ])
                .map_err(unavailable)?;
                let id: Option<Vec<u8>> = stmt.bind_value("claimed").map_err(unavailable)?;
                id.map(|id| Uuid::from_slice(&id).map_err(corrupt))
                    .transpose()
            })
            .await?;
        match claimed {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    async fn save(&self, job: &JobSnapshot, instance: &Uuid) -> Result<bool> {
        let mut binds = state_binds(job);
        binds.push(("instance", raw(instance)));
        let statement = if job.state.is_terminal() {
            sql::SAVE_END
        } else {
            binds.retain(|(name, _)| {
                !matches!(*name, "outputs" | "error" | "cancel_requested" | "end_time")
            });
            sql::SAVE_PROGRESS
        };
        Ok(self.change(statement, binds, Some("saved")).await? == 1)
    }

    /// Never asked: without plans its jobs have one attempt.
    async fn retry(&self, _job: &JobSnapshot, _instance: &Uuid) -> Result<bool> {
        Err(Error::Unimplemented(
            "the Oracle job store does not keep retry policies".into(),
        ))
    }

    /// Its jobs have no expiry.
    async fn expire_due(&self, _now: SystemTime) -> Result<Vec<Uuid>> {
        Ok(Vec::new())
    }

    /// Not yet: its tables have no columns for retry policies, expiry or
    /// schedule ticks.
    fn keeps_plans(&self) -> bool {
        false
    }

    async fn release(&self, job: &JobSnapshot, instance: &Uuid) -> Result<()> {
        let binds = vec![
            ("id", raw(&job.id)),
            ("message", text(job.progress_message.as_ref())),
            ("instance", raw(instance)),
        ];
        self.change(sql::RELEASE, binds, None).await.map(drop)
    }

    async fn cancel(&self, id: &Uuid) -> Result<CancelOutcome> {
        let id = *id;
        self.blocking(move |conn, schema| {
            let mut outcome = None;
            let job = lock_and_write(conn, &schema, &id, |job| {
                let decided = lifecycle::cancel(job, SystemTime::now())?;
                outcome = Some(decided);
                Ok(decided != Cancel::AlreadyRequested)
            })?;
            conn.commit().map_err(unavailable)?;
            Ok(match (job, outcome) {
                (Some((job, _)), Some(Cancel::Ended)) => CancelOutcome::Cancelled(job),
                (Some((job, _)), Some(_)) => CancelOutcome::Requested(job),
                _ => CancelOutcome::Missing,
            })
        })
        .await
    }

    async fn cancel_requests(&self, live: &[Uuid]) -> Result<Vec<Uuid>> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = live.iter().map(|id| id.simple().to_string()).collect();
        let ids = ids.join(",").to_uppercase();
        self.blocking(move |conn, schema| {
            let rows = conn
                .query_named(
                    &sql::in_schema(sql::CANCEL_REQUESTS, &schema),
                    &[("ids", &ids)],
                )
                .map_err(unavailable)?;
            rows.map(|row| {
                let id: Vec<u8> = row.map_err(unavailable)?.get(0).map_err(corrupt)?;
                Uuid::from_slice(&id).map_err(corrupt)
            })
            .collect()
        })
        .await
    }

    async fn delete(&self, id: &Uuid) -> Result<bool> {
        Ok(self
            .change(sql::DELETE, vec![("id", raw(id))], Some("deleted"))
            .await?
            == 1)
    }

    async fn sweep(&self, retention: Duration, tombstone_retention: Duration) -> Result<u64> {
        let cutoff = DateTime::<Utc>::from(SystemTime::now() - retention);
        let mut total = 0;
        loop {
            let binds = vec![("cutoff", Value::Time(Some(cutoff)))];
            let deleted = self.change(sql::SWEEP, binds, Some("deleted")).await?;
            total += deleted as u64;
            if deleted < 1000 {
                break;
            }
        }
        let purge_before = DateTime::<Utc>::from(SystemTime::now() - tombstone_retention);
        let binds = vec![("cutoff", Value::Time(Some(purge_before)))];
        self.change(sql::PURGE_TOMBSTONES, binds, None).await?;
        Ok(total)
    }

    async fn changes(&self, after: u64) -> Result<Changes> {
        let after_bind = after as i64;
        let (jobs, deleted) = self
            .blocking(move |conn, schema| {
                let binds = [("after", Value::Int(Some(after_bind)))];
                let jobs = query_jobs(conn, &schema, sql::CHANGED_JOBS, &binds)?;
                let deleted = tombstones(conn, &schema, sql::CHANGED_TOMBSTONES, &binds)?;
                Ok((jobs, deleted))
            })
            .await?;
        Ok(Changes::from_batches(jobs, deleted, after))
    }

    async fn revision(&self) -> Result<u64> {
        self.blocking(|conn, schema| Ok(revisions(conn, &schema)?.0))
            .await
    }

    async fn start_of_watch(&self, filter: &WatchFilter, since: Option<u64>) -> Result<Start> {
        let owner = (!filter.caller.admin).then(|| filter.caller.name.to_string());
        let procedure = filter.procedure.clone();
        let states: Vec<&str> = [JobState::Pending, JobState::Running]
            .into_iter()
            .filter(|s| filter.states.is_empty() || filter.states.contains(s))
            .map(JobState::name)
            .collect();
        let states = states.join(",");
        self.blocking(move |conn, schema| {
            // One read-consistent snapshot for every query that follows.
            conn.execute("SET TRANSACTION READ ONLY", &[])
                .map_err(unavailable)?;
            let (revision, purged_through) = revisions(conn, &schema)?;
            let mut start = Start {
                revision,
                ..Start::default()
            };
            let common = |after: Option<u64>| {
                let mut binds = vec![
                    ("procedure", procedure_bind(procedure.as_deref())),
                    ("owner", owner_bind(owner.as_deref())),
                ];
                if let Some(after) = after {
                    binds.insert(0, ("after", Value::Int(Some(after as i64))));
                }
                binds
            };
            match since {
                Some(since) => {
                    feed::check_resumable(since, revision, purged_through)?;
                    let binds = common(Some(since));
                    start.jobs = jobs_of(query_jobs(conn, &schema, sql::CHANGED_SINCE, &binds)?);
                    start.deleted = tombstones(conn, &schema, sql::DELETED_SINCE, &binds)?;
                }
                None => {
                    let mut binds = common(None);
                    binds.insert(0, ("states", text(states)));
                    start.jobs = jobs_of(query_jobs(conn, &schema, sql::LIVE_JOBS, &binds)?);
                }
            }
            conn.commit().map_err(unavailable)?;
            Ok(start)
        })
        .await
    }

    async fn heartbeat(&self, instance: &Uuid, name: &str, lease: Duration) -> Result<()> {
        let binds = vec![
            ("id", raw(instance)),
            ("name", text(name)),
            ("lease_until", time(Some(SystemTime::now() + lease))),
        ];
        self.change(sql::HEARTBEAT, binds, None).await.map(drop)
    }

    async fn leave(&self, instance: &Uuid) -> Result<()> {
        self.change(sql::LEAVE, vec![("instance", raw(instance))], None)
            .await
            .map(drop)
    }

    async fn recover(&self) -> Result<Vec<Uuid>> {
        self.blocking(|conn, schema| {
            let dead: Vec<(Vec<u8>, String, DateTime<Utc>)> = conn
                .query_as(&sql::in_schema(sql::EXPIRED_INSTANCES, &schema), &[])
                .map_err(unavailable)?
                .collect::<std::result::Result<_, _>>()
                .map_err(unavailable)?;
            let mut failed = Vec::new();
            for (instance, name, lease_until) in dead {
                let binds: Binds = vec![("instance", &instance)];
                conn.execute_named(&sql::in_schema(sql::RELEASE_CLAIMS_OF, &schema), &binds)
                    .map_err(unavailable)?;
                let running = query_jobs(
                    conn,
                    &schema,
                    sql::RUNNING_OF,
                    &[("instance", Value::Raw(instance.clone()))],
                )?;
                let who = match Uuid::from_slice(&instance) {
                    Ok(id) => format!("{name} ({id})"),
                    Err(_) => name.clone(),
                };
                for ChangedJob { job, .. } in running {
                    let interrupted = lock_and_write(conn, &schema, &job.id, |job| {
                        Ok(lifecycle::interrupt(
                            job,
                            &who,
                            lease_until.into(),
                            SystemTime::now(),
                        ))
                    })?;
                    if let Some((job, true)) = interrupted {
                        failed.push(job.id);
                    }
                }
                conn.execute_named(&sql::in_schema(sql::LEAVE, &schema), &binds)
                    .map_err(unavailable)?;
            }
            conn.commit().map_err(unavailable)?;
            Ok(failed)
        })
        .await
    }

    /// No NOTIFY here: the engine hears its own announcements, and other
    /// instances poll.
    async fn notify(&self, _announcement: Announcement) {}

    fn listen(
        &self,
        _tasks: &TaskTracker,
        _stop: CancellationToken,
    ) -> Option<broadcast::Sender<String>> {
        None
    }
}
