//! The Oracle job table's statements (12c or later), mirroring the
//! PostgreSQL store's schema version 2 statement for statement: one
//! sequence for revisions, JSON in CLOB columns checked IS JSON, claims
//! with FOR UPDATE SKIP LOCKED (in a PL/SQL block, since Oracle locks rows
//! as a cursor fetches them) that leave the job PENDING, transitions
//! written on rows locked FOR UPDATE after `lifecycle` decided them,
//! conditional writes of the instance that runs a job, tombstones for
//! deletions, and the change feed by revision. `{s}` is the quoted schema.
//!
//! Oracle keeps '' as NULL: an empty owner or message is stored NULL, and
//! owners are compared with DECODE, which matches NULL with NULL.
//! Procedure names fold ASCII case only (TRANSLATE), as in PostgreSQL.

/// The tables of version 2.
pub const CREATE_JOBS: &str = "CREATE TABLE {s}.PROCGATE_JOBS (
    ID               RAW(16) PRIMARY KEY,
    OWNER            VARCHAR2(128),
    REQUEST_ID       VARCHAR2(128),
    PROCEDURE_NAME   VARCHAR2(400) NOT NULL,
    CALL             CLOB NOT NULL CHECK (CALL IS JSON),
    STATE            VARCHAR2(16) NOT NULL,
    PROGRESS         NUMBER(3) DEFAULT 0 NOT NULL,
    PROGRESS_MESSAGE VARCHAR2(4000),
    MESSAGES         CLOB CHECK (MESSAGES IS JSON),
    OUTPUTS          CLOB CHECK (OUTPUTS IS JSON),
    ERROR            CLOB CHECK (ERROR IS JSON),
    CANCEL_REQUESTED NUMBER(1) DEFAULT 0 NOT NULL,
    INSTANCE_ID      RAW(16),
    CREATE_TIME      TIMESTAMP WITH TIME ZONE NOT NULL,
    START_TIME       TIMESTAMP WITH TIME ZONE,
    END_TIME         TIMESTAMP WITH TIME ZONE,
    REVISION         NUMBER(19) NOT NULL,
    CREATE_REVISION  NUMBER(19) NOT NULL UNIQUE,
    START_REVISION   NUMBER(19),
    CONSTRAINT PROCGATE_JOBS_REQUEST UNIQUE (OWNER, REQUEST_ID)
)";

pub const CREATE_REVISION: &str = "CREATE SEQUENCE {s}.PROCGATE_REVISION NOCACHE ORDER";

pub const CREATE_INSTANCES: &str = "CREATE TABLE {s}.PROCGATE_INSTANCES (
    ID          RAW(16) PRIMARY KEY,
    NAME        VARCHAR2(200) NOT NULL,
    STARTED_AT  TIMESTAMP WITH TIME ZONE DEFAULT SYSTIMESTAMP NOT NULL,
    LEASE_UNTIL TIMESTAMP WITH TIME ZONE NOT NULL
)";

pub const CREATE_TOMBSTONES: &str = "CREATE TABLE {s}.PROCGATE_TOMBSTONES (
    ID             RAW(16) PRIMARY KEY,
    OWNER          VARCHAR2(128),
    PROCEDURE_NAME VARCHAR2(400) NOT NULL,
    STATE          VARCHAR2(16) NOT NULL,
    REVISION       NUMBER(19) NOT NULL UNIQUE,
    DELETED_AT     TIMESTAMP WITH TIME ZONE DEFAULT SYSTIMESTAMP NOT NULL
)";

pub const CREATE_FEED: &str = "CREATE TABLE {s}.PROCGATE_FEED (
    ID             NUMBER(1) DEFAULT 1 PRIMARY KEY CHECK (ID = 1),
    PURGED_THROUGH NUMBER(19) DEFAULT 0 NOT NULL
)";

/// A job's columns, in the order the PostgreSQL store reads them, then
/// its start revision.
pub const COLUMNS: &str = "ID, OWNER, REQUEST_ID, CALL, STATE, PROGRESS, PROGRESS_MESSAGE, \
    MESSAGES, OUTPUTS, ERROR, CANCEL_REQUESTED, CREATE_TIME, START_TIME, END_TIME, REVISION, \
    CREATE_REVISION, START_REVISION";

/// `TRANSLATE(x{AZ})` folds ASCII letters only.
const ASCII_FOLD: &str = ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'";

/// Insert-or-get: a PENDING job whose submit takes one revision for both
/// its revision and its place in submission order; with its (owner,
/// request_id) already stored, nothing (then FIND_BY_REQUEST_ID).
pub const INSERT: &str = "DECLARE
    r NUMBER := {s}.PROCGATE_REVISION.NEXTVAL;
BEGIN
    INSERT INTO {s}.PROCGATE_JOBS (ID, OWNER, REQUEST_ID, PROCEDURE_NAME, CALL, STATE,
        PROGRESS_MESSAGE, CREATE_TIME, REVISION, CREATE_REVISION)
    VALUES (:id, :owner, :request_id, :procedure, :call, 'PENDING', :message, :create_time, r, r);
    :inserted := 1;
EXCEPTION
    WHEN DUP_VAL_ON_INDEX THEN :inserted := 0;
END;";

pub const GET: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS WHERE ID = :id";

pub const FIND_BY_REQUEST_ID: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS
 WHERE DECODE(OWNER, :owner, 1, 0) = 1 AND REQUEST_ID = :request_id";

/// One ListJobs page, newest first by submission; :states is a
/// comma-separated list (empty: every state).
pub const LIST_PAGE: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS
 WHERE CREATE_REVISION < :before
   AND (:states IS NULL OR INSTR(',' || :states || ',', ',' || STATE || ',') > 0)
   AND (:procedure IS NULL OR TRANSLATE(PROCEDURE_NAME{AZ}) = TRANSLATE(:procedure{AZ}))
   AND (:owner IS NULL OR OWNER = :owner)
 ORDER BY CREATE_REVISION DESC FETCH FIRST :limit ROWS ONLY";

/// A WatchJobs stream's EXISTING jobs: the live ones that match.
pub const LIVE_JOBS: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS
 WHERE STATE IN ('PENDING', 'RUNNING')
   AND (:states IS NULL OR INSTR(',' || :states || ',', ',' || STATE || ',') > 0)
   AND (:procedure IS NULL OR TRANSLATE(PROCEDURE_NAME{AZ}) = TRANSLATE(:procedure{AZ}))
   AND (:owner IS NULL OR OWNER = :owner)
 ORDER BY REVISION";

/// A resumed WatchJobs stream's replay: every matching job changed after
/// :after, whatever its state.
pub const CHANGED_SINCE: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS
 WHERE REVISION > :after
   AND (:procedure IS NULL OR TRANSLATE(PROCEDURE_NAME{AZ}) = TRANSLATE(:procedure{AZ}))
   AND (:owner IS NULL OR OWNER = :owner)
 ORDER BY REVISION";

/// And the matching deletions after :after.
pub const DELETED_SINCE: &str = "SELECT ID, OWNER, PROCEDURE_NAME, STATE, REVISION, DELETED_AT
  FROM {s}.PROCGATE_TOMBSTONES
 WHERE REVISION > :after
   AND (:procedure IS NULL OR TRANSLATE(PROCEDURE_NAME{AZ}) = TRANSLATE(:procedure{AZ}))
   AND (:owner IS NULL OR OWNER = :owner)
 ORDER BY REVISION";

pub const PENDING_COUNT: &str = "SELECT COUNT(*) FROM {s}.PROCGATE_JOBS WHERE STATE = 'PENDING'";

pub const STATE_COUNTS: &str = "SELECT STATE, COUNT(*) FROM {s}.PROCGATE_JOBS GROUP BY STATE";

/// Claims the oldest unclaimed PENDING job for :instance; it stays PENDING
/// with `lifecycle::CLAIMED` as its message (:message). :claimed gets its
/// id, NULL when there is none.
pub const CLAIM: &str = "DECLARE
    CURSOR pending IS
        SELECT ID FROM {s}.PROCGATE_JOBS WHERE STATE = 'PENDING' AND INSTANCE_ID IS NULL
         ORDER BY CREATE_REVISION FOR UPDATE SKIP LOCKED;
    l_id RAW(16);
BEGIN
    OPEN pending;
    FETCH pending INTO l_id;
    IF pending%FOUND THEN
        UPDATE {s}.PROCGATE_JOBS
           SET INSTANCE_ID = :instance, PROGRESS_MESSAGE = :message,
               REVISION = {s}.PROCGATE_REVISION.NEXTVAL
         WHERE CURRENT OF pending;
    ELSE
        l_id := NULL;
    END IF;
    CLOSE pending;
    COMMIT;
    :claimed := l_id;
END;";

/// Locks a job's row for a transition that `lifecycle` decides (cancel,
/// recovery); WRITE then stores the result in the same transaction.
pub const LOCK: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS WHERE ID = :id FOR UPDATE";

pub const WRITE: &str = "UPDATE {s}.PROCGATE_JOBS
   SET STATE = :state, PROGRESS = :progress, PROGRESS_MESSAGE = :message, MESSAGES = :messages,
       OUTPUTS = :outputs, ERROR = :error, CANCEL_REQUESTED = :cancel_requested,
       START_TIME = :start_time, END_TIME = :end_time,
       INSTANCE_ID = NVL(:instance, INSTANCE_ID), REVISION = {s}.PROCGATE_REVISION.NEXTVAL
 WHERE ID = :id
 RETURNING REVISION INTO :revision";

/// A claimed job's start and progress, only while it is this instance's
/// live job.
/// Its first RUNNING write also keeps that revision as START_REVISION.
pub const SAVE_PROGRESS: &str = "DECLARE
    r NUMBER := {s}.PROCGATE_REVISION.NEXTVAL;
BEGIN
    UPDATE {s}.PROCGATE_JOBS
       SET STATE = :state, START_TIME = :start_time, PROGRESS = :progress,
           PROGRESS_MESSAGE = :message, MESSAGES = :messages, REVISION = r,
           START_REVISION = CASE WHEN :state = 'RUNNING' THEN NVL(START_REVISION, r)
                                 ELSE START_REVISION END
     WHERE ID = :id AND STATE IN ('PENDING', 'RUNNING') AND INSTANCE_ID = :instance
       AND NOT (STATE = 'RUNNING' AND :state = 'PENDING');
    :saved := SQL%ROWCOUNT;
END;";

/// A job's end, only while it is this instance's live job; a start
/// written with it takes a revision of its own, before the end's.
pub const SAVE_END: &str = "DECLARE
    s NUMBER := {s}.PROCGATE_REVISION.NEXTVAL;
    e NUMBER := {s}.PROCGATE_REVISION.NEXTVAL;
BEGIN
    UPDATE {s}.PROCGATE_JOBS
       SET STATE = :state, PROGRESS = :progress, PROGRESS_MESSAGE = :message,
           MESSAGES = :messages, OUTPUTS = :outputs, ERROR = :error, END_TIME = :end_time,
           START_TIME = :start_time,
           CANCEL_REQUESTED = GREATEST(CANCEL_REQUESTED, :cancel_requested), REVISION = e,
           START_REVISION = CASE WHEN :start_time IS NOT NULL THEN NVL(START_REVISION, s)
                                 ELSE START_REVISION END
     WHERE ID = :id AND STATE IN ('PENDING', 'RUNNING') AND INSTANCE_ID = :instance;
    :saved := SQL%ROWCOUNT;
END;";

/// A claimed job that never got a connection goes back to the queue.
pub const RELEASE: &str = "UPDATE {s}.PROCGATE_JOBS
   SET INSTANCE_ID = NULL, PROGRESS_MESSAGE = :message, REVISION = {s}.PROCGATE_REVISION.NEXTVAL
 WHERE ID = :id AND STATE = 'PENDING' AND INSTANCE_ID = :instance";

/// Which of the live jobs (:ids, comma-separated hex) someone asked to cancel.
pub const CANCEL_REQUESTS: &str = "SELECT ID FROM {s}.PROCGATE_JOBS
 WHERE INSTR(',' || :ids || ',', ',' || RAWTOHEX(ID) || ',') > 0 AND CANCEL_REQUESTED = 1";

/// Deletes an ended job and leaves its tombstone; :deleted is 1 or 0.
pub const DELETE: &str = "DECLARE
    l_owner VARCHAR2(128);
    l_procedure VARCHAR2(400);
    l_state VARCHAR2(16);
BEGIN
    DELETE FROM {s}.PROCGATE_JOBS
     WHERE ID = :id AND STATE IN ('COMPLETED', 'FAILED', 'CANCELLED')
     RETURNING OWNER, PROCEDURE_NAME, STATE INTO l_owner, l_procedure, l_state;
    :deleted := SQL%ROWCOUNT;
    IF SQL%ROWCOUNT = 1 THEN
        INSERT INTO {s}.PROCGATE_TOMBSTONES (ID, OWNER, PROCEDURE_NAME, STATE, REVISION)
        VALUES (:id, l_owner, l_procedure, l_state, {s}.PROCGATE_REVISION.NEXTVAL);
    END IF;
END;";

/// Expired jobs, 1,000 at a time (repeat until :deleted < 1000), each
/// leaving a tombstone.
pub const SWEEP: &str = "DECLARE
    TYPE ids_t IS TABLE OF RAW(16);
    TYPE texts_t IS TABLE OF VARCHAR2(400);
    l_ids ids_t; l_owners texts_t; l_procedures texts_t; l_states texts_t;
BEGIN
    DELETE FROM {s}.PROCGATE_JOBS
     WHERE ID IN (SELECT ID FROM {s}.PROCGATE_JOBS WHERE END_TIME < :cutoff
                   FETCH FIRST 1000 ROWS ONLY)
     RETURNING ID, OWNER, PROCEDURE_NAME, STATE
     BULK COLLECT INTO l_ids, l_owners, l_procedures, l_states;
    FORALL i IN 1 .. l_ids.COUNT
        INSERT INTO {s}.PROCGATE_TOMBSTONES (ID, OWNER, PROCEDURE_NAME, STATE, REVISION)
        VALUES (l_ids(i), l_owners(i), l_procedures(i), l_states(i),
                {s}.PROCGATE_REVISION.NEXTVAL);
    :deleted := l_ids.COUNT;
END;";

/// Forgets tombstones older than :cutoff, keeping the highest purged
/// revision so that a resume from before it is refused.
pub const PURGE_TOMBSTONES: &str = "BEGIN
    UPDATE {s}.PROCGATE_FEED SET PURGED_THROUGH = GREATEST(PURGED_THROUGH,
        NVL((SELECT MAX(REVISION) FROM {s}.PROCGATE_TOMBSTONES WHERE DELETED_AT < :cutoff), 0));
    DELETE FROM {s}.PROCGATE_TOMBSTONES WHERE DELETED_AT < :cutoff;
END;";

/// The change feed: jobs and tombstones stamped after :after.
pub const CHANGED_JOBS: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS WHERE REVISION > :after
 ORDER BY REVISION FETCH FIRST 1000 ROWS ONLY";

pub const CHANGED_TOMBSTONES: &str = "SELECT ID, OWNER, PROCEDURE_NAME, STATE, REVISION, DELETED_AT
  FROM {s}.PROCGATE_TOMBSTONES WHERE REVISION > :after ORDER BY REVISION FETCH FIRST 1000 ROWS ONLY";

/// The current revision and the highest purged one.
pub const REVISIONS: &str = "SELECT GREATEST(
       NVL((SELECT MAX(REVISION) FROM {s}.PROCGATE_JOBS), 0),
       NVL((SELECT MAX(REVISION) FROM {s}.PROCGATE_TOMBSTONES), 0),
       f.PURGED_THROUGH), f.PURGED_THROUGH
  FROM {s}.PROCGATE_FEED f";

pub const HEARTBEAT: &str = "MERGE INTO {s}.PROCGATE_INSTANCES i
USING (SELECT :id AS ID, :name AS NAME, :lease_until AS LEASE_UNTIL FROM DUAL) n
   ON (i.ID = n.ID)
 WHEN MATCHED THEN UPDATE SET i.LEASE_UNTIL = n.LEASE_UNTIL
 WHEN NOT MATCHED THEN INSERT (ID, NAME, LEASE_UNTIL) VALUES (n.ID, n.NAME, n.LEASE_UNTIL)";

/// Instances whose lease expired, locked for the recovery that follows:
/// RELEASE_CLAIMS_OF, then `lifecycle::interrupt` on each of RUNNING_OF
/// (LOCK + WRITE), then LEAVE.
pub const EXPIRED_INSTANCES: &str = "SELECT ID, NAME, LEASE_UNTIL FROM {s}.PROCGATE_INSTANCES
 WHERE LEASE_UNTIL < SYSTIMESTAMP FOR UPDATE SKIP LOCKED";

/// What a dead instance claimed but never started goes back to the queue.
pub const RELEASE_CLAIMS_OF: &str = "UPDATE {s}.PROCGATE_JOBS
   SET INSTANCE_ID = NULL, REVISION = {s}.PROCGATE_REVISION.NEXTVAL
 WHERE INSTANCE_ID = :instance AND STATE = 'PENDING'";

pub const RUNNING_OF: &str = "SELECT {columns} FROM {s}.PROCGATE_JOBS
 WHERE INSTANCE_ID = :instance AND STATE = 'RUNNING' FOR UPDATE";

pub const LEAVE: &str = "DELETE FROM {s}.PROCGATE_INSTANCES WHERE ID = :instance";

/// Every statement, for checks that hold of all of them.
pub const ALL: [&str; 31] = [
    CREATE_JOBS,
    CREATE_REVISION,
    CREATE_INSTANCES,
    CREATE_TOMBSTONES,
    CREATE_FEED,
    INSERT,
    GET,
    FIND_BY_REQUEST_ID,
    LIST_PAGE,
    LIVE_JOBS,
    CHANGED_SINCE,
    DELETED_SINCE,
    PENDING_COUNT,
    STATE_COUNTS,
    CLAIM,
    LOCK,
    WRITE,
    SAVE_PROGRESS,
    SAVE_END,
    RELEASE,
    CANCEL_REQUESTS,
    DELETE,
    SWEEP,
    PURGE_TOMBSTONES,
    CHANGED_JOBS,
    CHANGED_TOMBSTONES,
    REVISIONS,
    HEARTBEAT,
    EXPIRED_INSTANCES,
    RELEASE_CLAIMS_OF,
    RUNNING_OF,
];

/// Renders a statement for a schema: `{s}` quoted, `{columns}` expanded.
pub fn in_schema(sql: &str, schema: &str) -> String {
    sql.replace("{columns}", COLUMNS)
        .replace("{AZ}", ASCII_FOLD)
        .replace("{s}", &format!("\"{}\"", schema.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bind names of a statement, in order of first use.
    fn binds(sql: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut rest = sql;
        while let Some(at) = rest.find(':') {
            let tail = &rest[at + 1..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let is_bind = !name.is_empty() && !rest[..at].ends_with(':');
            if is_bind && !tail.starts_with('=') && !names.contains(&name) {
                names.push(name.clone());
            }
            rest = &tail[name.len()..];
        }
        names
    }

    #[test]
    fn every_statement_is_schema_qualified_and_renders_completely() {
        for sql in ALL.iter().chain([&LEAVE]) {
            assert!(sql.contains("{s}."), "schema-qualified: {sql}");
            let rendered = in_schema(sql, r#"we"ird"#);
            assert!(!rendered.contains('{'), "fully rendered: {rendered}");
            assert!(rendered.contains(r#""we""ird"."#));
        }
    }

    #[test]
    fn changes_stamp_the_next_revision_and_writes_keep_their_guards() {
        for write in [CLAIM, WRITE, RELEASE, RELEASE_CLAIMS_OF] {
            assert!(
                write.contains("REVISION = {s}.PROCGATE_REVISION.NEXTVAL"),
                "{write}"
            );
        }
        // Saves take their revisions first, so that a start keeps its own.
        assert!(SAVE_PROGRESS.contains("r NUMBER := {s}.PROCGATE_REVISION.NEXTVAL"));
        assert!(SAVE_PROGRESS.contains("REVISION = r"));
        assert!(SAVE_PROGRESS.contains("NVL(START_REVISION, r)"));
        assert!(SAVE_END.contains("REVISION = e"));
        assert!(SAVE_END.contains("NVL(START_REVISION, s)"));
        assert!(SAVE_END.contains("GREATEST(CANCEL_REQUESTED, :cancel_requested)"));
        for save in [SAVE_PROGRESS, SAVE_END] {
            assert_eq!(binds(save).last().map(String::as_str), Some("saved"));
        }
        for guarded in [SAVE_PROGRESS, SAVE_END] {
            assert!(
                guarded.contains("STATE IN ('PENDING', 'RUNNING') AND INSTANCE_ID = :instance"),
                "{guarded}"
            );
        }
        assert!(RELEASE.contains("STATE = 'PENDING' AND INSTANCE_ID = :instance"));
        assert!(INSERT.contains("VALUES (:id, :owner, :request_id, :procedure, :call, 'PENDING', :message, :create_time, r, r)"));
        for deletion in [DELETE, SWEEP] {
            assert!(
                deletion.contains("INSERT INTO {s}.PROCGATE_TOMBSTONES"),
                "{deletion}"
            );
        }
    }

    #[test]
    fn claims_take_the_oldest_unclaimed_job_and_leave_it_pending() {
        let claim = in_schema(CLAIM, "APP");
        assert!(
            claim
                .contains(r#""APP".PROCGATE_JOBS WHERE STATE = 'PENDING' AND INSTANCE_ID IS NULL"#)
        );
        assert!(claim.contains("ORDER BY CREATE_REVISION FOR UPDATE SKIP LOCKED"));
        assert!(claim.contains("WHERE CURRENT OF pending"));
        assert!(
            !claim.contains("'RUNNING'"),
            "the start comes with a connection"
        );
        assert_eq!(binds(CLAIM), ["instance", "message", "claimed"]);
    }

    #[test]
    fn pages_and_the_feed_follow_the_revisions() {
        assert!(LIST_PAGE.contains("ORDER BY CREATE_REVISION DESC"));
        let page = in_schema(LIST_PAGE, "APP");
        assert!(page.contains(
            "TRANSLATE(PROCEDURE_NAME, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') \
             = TRANSLATE(:procedure, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
        ));
        assert!(
            !page.to_uppercase().contains("LOWER("),
            "ASCII folding only"
        );
        assert_eq!(
            binds(LIST_PAGE),
            ["before", "states", "procedure", "owner", "limit"]
        );
        for feed in [CHANGED_JOBS, CHANGED_TOMBSTONES] {
            assert!(feed.contains("REVISION > :after"), "{feed}");
            assert!(feed.contains("ORDER BY REVISION FETCH FIRST 1000 ROWS ONLY"));
        }
        assert!(LIVE_JOBS.contains("STATE IN ('PENDING', 'RUNNING')"));
        for start in [LIVE_JOBS, CHANGED_SINCE, DELETED_SINCE] {
            assert!(start.contains("ORDER BY REVISION"), "{start}");
            assert!(start.contains("(:owner IS NULL OR OWNER = :owner)"));
        }
        assert_eq!(binds(CHANGED_SINCE), ["after", "procedure", "owner"]);
        assert!(
            FIND_BY_REQUEST_ID.contains("DECODE(OWNER, :owner, 1, 0) = 1"),
            "Oracle stores an empty owner as NULL"
        );
        assert!(PURGE_TOMBSTONES.contains("PURGED_THROUGH = GREATEST(PURGED_THROUGH"));
        assert_eq!(binds(WRITE).last().map(String::as_str), Some("revision"));
    }

    #[test]
    fn the_tables_are_those_of_version_2() {
        let jobs = in_schema(CREATE_JOBS, "APP");
        for column in [
            "REVISION         NUMBER(19) NOT NULL",
            "CREATE_REVISION  NUMBER(19) NOT NULL UNIQUE",
            "START_REVISION   NUMBER(19)",
        ] {
            assert!(jobs.contains(column), "{column}");
        }
        assert!(
            !jobs.contains("VERSION          NUMBER"),
            "version 1's column is gone"
        );
        assert!(!jobs.contains(" SEQ "), "version 1's column is gone");
        assert!(jobs.contains("CHECK (OUTPUTS IS JSON)"));
        assert!(jobs.contains("UNIQUE (OWNER, REQUEST_ID)"));
        assert!(
            CREATE_REVISION.contains("ORDER"),
            "revisions in commit order across RAC nodes"
        );
    }
}
