//! `--policy`: each role calls only its own procedures, through every RPC
//! that names one, decided before any database round trip; admins see
//! every job; the file is read again on SIGHUP, and a bad one keeps the
//! policy there was. Callers come from a token file with roles.

mod common;

use std::time::Duration;

use common::*;
use procgate::proto as pb;
use procgate::proto::value::Kind;
use tonic::Code;

const TOKENS_WITH_ROLES: &str = "\
etl-user:etl-secret-1:etl
rep-user:rep-secret-1:reports
both-user:both-secret-1:etl,reports
ops-user:ops-secret-1:ops
nobody:nobody-secret-1
";

const POLICY: &str = r#"
[roles.etl]
allow = ["pkg_etl.*", "public.nap"]

[roles.reports]
allow = ["public.*"]
deny  = ["public.nap", "public.fail_with"]

[roles.ops]
admin = true
"#;

const ETL: &str = "etl-secret-1";
const REPORTS: &str = "rep-secret-1";
const BOTH: &str = "both-secret-1";
const OPS: &str = "ops-secret-1";
const NOBODY: &str = "nobody-secret-1";

/// A gateway with the token file and policy above; the directory keeps
/// both files, which tests rewrite before a SIGHUP.
async fn gateway_with_policy(policy: &str) -> (Gateway, tempfile::TempDir) {
    let (dir, tokens) = token_file(TOKENS_WITH_ROLES);
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let gw = Gateway::start(&[
        "--token-file",
        &tokens,
        "--policy",
        policy_path.to_str().unwrap(),
    ])
    .await;
    (gw, dir)
}

fn sumar() -> pb::ProcedureCall {
    call(
        "pkg_etl.sumar",
        vec![
            p_in("a", Kind::IntegerValue(1)),
            p_in("b", Kind::IntegerValue(2)),
        ],
    )
}

fn twice() -> pb::ProcedureCall {
    function(
        "public.twice",
        vec![p_in("x", Kind::IntegerValue(21))],
        pb::ValueType::Integer,
    )
}

fn nap() -> pb::ProcedureCall {
    call("public.nap", vec![p_in("seconds", Kind::FloatValue(0.0))])
}

async fn execute_as(
    client: &mut Client,
    token: &str,
    call: pb::ProcedureCall,
) -> Result<pb::ExecuteSyncResponse, tonic::Status> {
    let request = pb::ExecuteSyncRequest { call: Some(call) };
    client
        .execute_sync(as_user(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// PERMISSION_DENIED naming the procedure, saying no role allows it, and
/// giving nothing of the policy away.
fn assert_denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, procedure: &str) {
    let status = result.expect_err(procedure);
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{procedure}: {status:?}"
    );
    let message = status.message();
    assert!(
        message.contains(&format!(
            "procedure {procedure}: no role of this caller allows it"
        )),
        "{message}"
    );
    let besides_the_name = message.replace(procedure, "");
    for secret in ["etl", "reports", "ops", "deny", "allow ="] {
        assert!(
            !besides_the_name.contains(secret),
            "the message shows the policy: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_calls_only_what_it_is_allowed_through_every_rpc() {
    let (mut gw, _files) = gateway_with_policy(POLICY).await;
    let mut client = gw.client().await;

    // Allowed: by one role, and by one of several when no role denies it.
    assert!(execute_as(&mut client, ETL, sumar()).await.is_ok());
    assert!(execute_as(&mut client, ETL, nap()).await.is_ok());
    assert!(execute_as(&mut client, REPORTS, twice()).await.is_ok());
    assert!(execute_as(&mut client, BOTH, sumar()).await.is_ok());
    assert!(execute_as(&mut client, BOTH, twice()).await.is_ok());

    // Refused: outside every role, denied by a role (whatever another
    // allows), no role at all, and a role that is admin only.
    assert_denied(execute_as(&mut client, ETL, twice()).await, "public.twice");
    assert_denied(execute_as(&mut client, REPORTS, nap()).await, "public.nap");
    assert_denied(execute_as(&mut client, BOTH, nap()).await, "public.nap");
    assert_denied(
        execute_as(&mut client, REPORTS, sumar()).await,
        "pkg_etl.sumar",
    );
    assert_denied(
        execute_as(&mut client, NOBODY, sumar()).await,
        "pkg_etl.sumar",
    );
    assert_denied(execute_as(&mut client, OPS, sumar()).await, "pkg_etl.sumar");
    // Names are compared as --allow compares them: case folded; and a deny
    // holds however the procedure is named, with fewer qualifiers or with
    // the database in front.
    assert_denied(
        execute_as(&mut client, REPORTS, call("PUBLIC.NAP", vec![])).await,
        "public.nap",
    );
    let database: String = gw.sql("SELECT current_database()").await[0].get(0);
    for walked_around in ["nap".to_string(), format!("{database}.public.nap")] {
        let status = execute_as(&mut client, REPORTS, call(&walked_around, vec![]))
            .await
            .expect_err(&walked_around);
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{walked_around}: {status:?}"
        );
    }

    // The same decision for every RPC that names a procedure.
    let submit = pb::SubmitAsyncRequest {
        call: Some(twice()),
        ..Default::default()
    };
    assert_denied(
        client.submit_async(as_user(submit.clone(), ETL)).await,
        "public.twice",
    );
    let job = client
        .submit_async(as_user(submit, REPORTS))
        .await
        .unwrap()
        .into_inner();
    let stream = client
        .execute_stream(as_user(
            pb::ExecuteSyncRequest {
                call: Some(twice()),
            },
            ETL,
        ))
        .await;
    match stream {
        Err(status) => assert_denied(Err::<(), _>(status), "public.twice"),
        Ok(response) => {
            let first = response.into_inner().message().await;
            assert_denied(first, "public.twice");
        }
    }
    let describe = |procedure: &str| pb::DescribeProcedureRequest {
        procedure: procedure.into(),
        ..Default::default()
    };
    assert_denied(
        client
            .describe_procedure(as_user(describe("public.twice"), ETL))
            .await,
        "public.twice",
    );
    assert!(
        client
            .describe_procedure(as_user(describe("pkg_etl.sumar"), ETL))
            .await
            .is_ok()
    );
    let schedule = |call: pb::ProcedureCall| pb::CreateScheduleRequest {
        schedule: Some(pb::Schedule {
            name: "nightly".into(),
            cron: "@daily".into(),
            call: Some(call),
            ..Default::default()
        }),
    };
    assert_denied(
        client
            .create_schedule(as_user(schedule(twice()), ETL))
            .await,
        "public.twice",
    );
    assert!(
        client
            .create_schedule(as_user(schedule(sumar()), ETL))
            .await
            .is_ok()
    );

    // An admin role sees and cancels the jobs of others; a caller without
    // it sees only its own.
    let list = pb::ListJobsRequest::default();
    let seen_by = |token: &'static str| {
        let mut client = client.clone();
        let list = list.clone();
        async move {
            client
                .list_jobs(as_user(list, token))
                .await
                .unwrap()
                .into_inner()
                .jobs
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(seen_by(OPS).await.contains(&job.id));
    assert!(!seen_by(ETL).await.contains(&job.id));
    let schedules = client
        .list_schedules(as_user(pb::ListSchedulesRequest::default(), OPS))
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert_eq!(schedules.len(), 1, "the admin sees etl-user's schedule");
    assert_eq!(schedules[0].owner, "etl-user");
    // An admin's change to it is checked against the roles it runs with,
    // its owner's: ops may call nothing, etl-user may call pkg_etl.*.
    let change_call = |call: pb::ProcedureCall| pb::UpdateScheduleRequest {
        schedule: Some(pb::Schedule {
            id: schedules[0].id.clone(),
            call: Some(call),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["call".into()],
        }),
    };
    assert_denied(
        client
            .update_schedule(as_user(change_call(twice()), OPS))
            .await,
        "public.twice",
    );
    let changed = client
        .update_schedule(as_user(change_call(nap()), OPS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.call.unwrap().procedure, "public.nap");

    // Decided before any round trip: a name that does not exist is refused
    // as not allowed rather than not found, and with the database gone the
    // refusal is the same, at once.
    assert_denied(
        execute_as(&mut client, ETL, call("public.no_such_thing", vec![])).await,
        "public.no_such_thing",
    );
    assert_eq!(
        execute_as(&mut client, ETL, call("pkg_etl.no_such_thing", vec![]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "an allowed name goes on to the catalog"
    );
    drop(gw.db.take());
    let started = std::time::Instant::now();
    assert_denied(execute_as(&mut client, ETL, twice()).await, "public.twice");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_policy_again_and_a_bad_file_keeps_the_old_one() {
    let (gw, files) = gateway_with_policy(POLICY).await;
    let mut client = gw.client().await;
    let policy = files.path().join("policy.toml");

    // A schedule of etl-user's ticks every second while its role allows it.
    let created = client
        .create_schedule(as_user(
            pb::CreateScheduleRequest {
                schedule: Some(pb::Schedule {
                    name: "every-second".into(),
                    cron: "* * * * * *".into(),
                    call: Some(sumar()),
                    ..Default::default()
                }),
            },
            ETL,
        ))
        .await
        .unwrap()
        .into_inner();
    let lister = client.clone();
    let jobs_of_schedule = || {
        let mut client = lister.clone();
        let schedule_id = created.id.clone();
        async move {
            client
                .list_jobs(as_user(
                    pb::ListJobsRequest {
                        schedule_id,
                        ..Default::default()
                    },
                    ETL,
                ))
                .await
                .unwrap()
                .into_inner()
                .jobs
                .len()
        }
    };
    eventually(Duration::from_secs(10), "a scheduled job", || async {
        (jobs_of_schedule().await > 0).then_some(())
    })
    .await;

    // etl loses pkg_etl and gains public.twice.
    std::fs::write(
        &policy,
        "[roles.etl]\nallow = [\"public.twice\"]\n[roles.ops]\nadmin = true\n",
    )
    .unwrap();
    // SAFETY: signalling this very process, whose gateway handles SIGHUP.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    eventually(Duration::from_secs(10), "the new policy", || {
        let mut client = client.clone();
        async move { execute_as(&mut client, ETL, twice()).await.ok() }
    })
    .await;
    assert_denied(execute_as(&mut client, ETL, sumar()).await, "pkg_etl.sumar");

    // The schedule runs with its owner's roles as they are at each tick:
    // it starts no more jobs. A tick may have been under way at the reload,
    // so the count starts a tick later; nothing happening has no event to
    // wait for, so three more ticks' time must add nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after_reload = jobs_of_schedule().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        jobs_of_schedule().await,
        after_reload,
        "no tick ran without a role"
    );

    // A bad file is refused; the policy in force stays.
    std::fs::write(&policy, "[roles.etl]\nallow = \"public.twice\"\n").unwrap();
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    // A refusal changes nothing to wait for: give the reload time to run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(execute_as(&mut client, ETL, twice()).await.is_ok());
    assert_denied(execute_as(&mut client, ETL, sumar()).await, "pkg_etl.sumar");
}

/// `--policy` without any caller identity, and a bad policy file, stop the
/// start with a reason; the latter names the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_stops_the_start_naming_the_line() {
    let db = start_db().await;
    let (dir, tokens) = token_file(TOKENS_WITH_ROLES);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[roles.etl]\nallow = [\"pkg_etl.*\"]\ndeny = [\"[oops\"]\n",
    )
    .unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, POLICY).unwrap();
    for (flags, says) in [
        (
            vec!["--token-file", &tokens, "--policy", bad.to_str().unwrap()],
            "line 3: \"[oops\" is not a valid glob",
        ),
        (
            vec![
                "--token-file",
                &tokens,
                "--policy",
                "/nonexistent/policy.toml",
            ],
            "cannot read --policy /nonexistent/policy.toml",
        ),
        (
            vec!["--policy", good.to_str().unwrap()],
            "without --token-file, --jwt-jwks or --jwt-jwks-url no caller has any",
        ),
    ] {
        let logs = refused_start(&db.url(), &flags).await;
        assert!(logs.contains(says), "{says:?} not in {logs}");
    }
}
