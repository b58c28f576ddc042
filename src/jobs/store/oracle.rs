//! The job store's statements for Oracle (12c or later), for the Oracle
//! integration suite to run. They mirror the PostgreSQL store: identity
//! sequence for order, JSON in CLOB columns checked IS JSON, conditional
//! updates on state and instance, claims with FOR UPDATE SKIP LOCKED (in a
//! PL/SQL block, since Oracle locks rows as a cursor fetches them), sweeps
//! in batches. `{s}` is the schema, quoted.
//!
//! Not wired to a running store yet: see docs/scaling.md.

/// The table of version 1.
pub const CREATE_JOBS: &str = "CREATE TABLE {s}.PROCGATE_JOBS (
    ID               RAW(16) PRIMARY KEY,
    SEQ              NUMBER GENERATED ALWAYS AS IDENTITY UNIQUE,
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
    VERSION          NUMBER DEFAULT 0 NOT NULL,
    CONSTRAINT PROCGATE_JOBS_REQUEST UNIQUE (OWNER, REQUEST_ID)
)";

pub const CREATE_INSTANCES: &str = "CREATE TABLE {s}.PROCGATE_INSTANCES (
    ID          RAW(16) PRIMARY KEY,
    NAME        VARCHAR2(200) NOT NULL,
    STARTED_AT  TIMESTAMP WITH TIME ZONE DEFAULT SYSTIMESTAMP NOT NULL,
    LEASE_UNTIL TIMESTAMP WITH TIME ZONE NOT NULL
)";

/// Claims the oldest PENDING job for :instance; :claimed gets its id (NULL
/// when there is none).
pub const CLAIM: &str = "DECLARE
    CURSOR pending IS
        SELECT ID FROM {s}.PROCGATE_JOBS WHERE STATE = 'PENDING'
         ORDER BY SEQ FOR UPDATE SKIP LOCKED;
    l_id RAW(16);
BEGIN
    OPEN pending;
    FETCH pending INTO l_id;
    IF pending%FOUND THEN
        UPDATE {s}.PROCGATE_JOBS
           SET STATE = 'RUNNING', INSTANCE_ID = :instance, START_TIME = SYSTIMESTAMP,
               PROGRESS_MESSAGE = 'waiting for a connection', VERSION = VERSION + 1
         WHERE CURRENT OF pending;
    ELSE
        l_id := NULL;
    END IF;
    CLOSE pending;
    COMMIT;
    :claimed := l_id;
END;";

/// A running job's progress, only while it is this instance's.
pub const SAVE_PROGRESS: &str = "UPDATE {s}.PROCGATE_JOBS
   SET PROGRESS = :progress, PROGRESS_MESSAGE = :message, MESSAGES = :messages,
       VERSION = VERSION + 1
 WHERE ID = :id AND STATE = 'RUNNING' AND INSTANCE_ID = :instance";

/// A job's end, only while it is this instance's running job.
pub const SAVE_END: &str = "UPDATE {s}.PROCGATE_JOBS
   SET STATE = :state, PROGRESS = :progress, PROGRESS_MESSAGE = :message,
       MESSAGES = :messages, OUTPUTS = :outputs, ERROR = :error, END_TIME = :end_time,
       VERSION = VERSION + 1
 WHERE ID = :id AND STATE = 'RUNNING' AND INSTANCE_ID = :instance";

/// Expired jobs, 1,000 rows per statement (repeat until it deletes fewer).
pub const SWEEP: &str = "DELETE FROM {s}.PROCGATE_JOBS WHERE END_TIME < :cutoff AND ROWNUM <= 1000";

/// Fails the RUNNING jobs of instances whose lease expired, then forgets them.
pub const RECOVER: &str = "BEGIN
    FOR dead IN (SELECT ID, NAME, LEASE_UNTIL FROM {s}.PROCGATE_INSTANCES
                  WHERE LEASE_UNTIL < SYSTIMESTAMP FOR UPDATE SKIP LOCKED) LOOP
        UPDATE {s}.PROCGATE_JOBS
           SET STATE = 'FAILED', END_TIME = SYSTIMESTAMP, PROGRESS_MESSAGE = 'interrupted',
               VERSION = VERSION + 1,
               ERROR = JSON_OBJECT('interrupted' VALUE 'INTERRUPTED: instance ' || dead.NAME
                       || ' (' || RAWTOHEX(dead.ID) || ') stopped renewing its lease at '
                       || TO_CHAR(dead.LEASE_UNTIL) || ' while running this job')
         WHERE INSTANCE_ID = dead.ID AND STATE = 'RUNNING';
        DELETE FROM {s}.PROCGATE_INSTANCES WHERE ID = dead.ID;
    END LOOP;
    COMMIT;
END;";

/// Renders a statement for a schema.
pub fn in_schema(sql: &str, schema: &str) -> String {
    sql.replace("{s}", &format!("\"{}\"", schema.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_schema_and_keep_their_guards() {
        let claim = in_schema(CLAIM, "APP");
        assert!(claim.contains(r#""APP".PROCGATE_JOBS WHERE STATE = 'PENDING'"#));
        assert!(claim.contains("FOR UPDATE SKIP LOCKED"));
        assert!(claim.contains("WHERE CURRENT OF pending"));
        for guarded in [SAVE_PROGRESS, SAVE_END] {
            assert!(guarded.contains("STATE = 'RUNNING' AND INSTANCE_ID = :instance"));
            assert!(guarded.contains("VERSION = VERSION + 1"));
        }
        assert!(SWEEP.contains("ROWNUM <= 1000"));
        assert!(RECOVER.contains("LEASE_UNTIL < SYSTIMESTAMP"));
        assert!(RECOVER.contains("'INTERRUPTED: instance '"));
        let ddl = in_schema(CREATE_JOBS, r#"we"ird"#);
        assert!(ddl.starts_with(r#"CREATE TABLE "we""ird".PROCGATE_JOBS"#));
        assert!(ddl.contains("CHECK (OUTPUTS IS JSON)"));
        assert!(ddl.contains("UNIQUE (OWNER, REQUEST_ID)"));
        for sql in [
            CREATE_JOBS,
            CREATE_INSTANCES,
            CLAIM,
            SAVE_PROGRESS,
            SAVE_END,
            SWEEP,
            RECOVER,
        ] {
            assert!(sql.contains("{s}."), "every statement is schema-qualified");
        }
    }
}
