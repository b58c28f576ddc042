//! A job's results kept whole: rows past the inline part are spooled (files
//! in memory mode, a table of the job store in database mode) and read back
//! with ReadJobResult, from any row; the spool has a cap, goes with the job,
//! and big jobs do not break the jobs API (JobView, --max-response-bytes).

mod common;

use common::*;
use procgate::proto::execute_stream_response::Kind as Part;
use procgate::proto::value::Kind;
use procgate::proto::{self as pb, ValueType as T};
use tokio_stream::StreamExt;
use tonic::Code;

fn numbers(n: i64) -> pb::ProcedureCall {
    function("numbers", vec![p_in("n", Kind::IntegerValue(n))], T::Cursor)
}

fn open_numbers(n: i64) -> pb::ProcedureCall {
    call(
        "open_numbers",
        vec![p_in("n", Kind::IntegerValue(n)), p_out("rows", T::Cursor)],
    )
}

fn read_request(job: &str, output: &str, start_row: u64) -> pb::ReadJobResultRequest {
    pb::ReadJobResultRequest {
        job_id: job.into(),
        output: output.into(),
        start_row,
    }
}

/// The first column of every row ReadJobResult sends, and its start.
async fn read_result(
    client: &mut Client,
    request: impl tonic::IntoRequest<pb::ReadJobResultRequest>,
) -> Result<(pb::ResultSetStart, Vec<i64>, Vec<usize>), tonic::Status> {
    let mut parts = client.read_job_result(request).await?.into_inner();
    let (mut start, mut firsts, mut batches) = (None, Vec::new(), Vec::new());
    while let Some(part) = parts.next().await {
        match part?.kind.unwrap() {
            Part::Start(s) => {
                assert!(start.is_none(), "one start");
                start = Some(s);
            }
            Part::Rows(batch) => {
                assert_eq!(start.as_ref().map(|s| &s.output), Some(&batch.output));
                batches.push(batch.rows.len());
                firsts.extend(batch.rows.iter().map(|row| match &row.values[0].kind {
                    Some(Kind::IntegerValue(i)) => *i,
                    other => panic!("an integer, not {other:?}"),
                }));
            }
            Part::Done(_) => panic!("ReadJobResult sends no done"),
        }
    }
    Ok((start.expect("a start"), firsts, batches))
}

fn inline_set(job: &pb::Job, output: Option<&str>) -> pb::ResultSet {
    let value = match output {
        None => job.return_value.clone(),
        Some(name) => job.outputs.get(name).cloned(),
    };
    match value.and_then(|v| v.kind) {
        Some(Kind::RowsValue(set)) => set,
        other => panic!("a result set, not {other:?}"),
    }
}

async fn a_big_result_is_kept_whole_and_read_from_any_row(store: Store) {
    let gw = gateway(store, &["--max-cursor-rows", "1000"]).await;
    let mut client = gw.client().await;
    let n = 60_000;
    let job = submit(&mut client, numbers(n)).await;
    let done = wait_state(&client, &job.id, pb::JobState::Completed).await;
    let inline = inline_set(&done, None);
    assert_eq!(inline.rows.len(), 1000);
    assert!(inline.truncated);
    assert_eq!(inline.total_rows, n as u64);
    assert_eq!(
        done.messages,
        [
            "the result: the first 1000 of its 60000 rows are inline (--max-cursor-rows, \
          --max-inline-result-bytes): read every row with ReadJobResult or Flight"
        ]
    );

    let (start, rows, batches) = read_result(&mut client, read_request(&job.id, "", 0))
        .await
        .unwrap();
    assert_eq!(start.output, "");
    let names: Vec<&str> = start.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["num", "label"]);
    assert_eq!(rows, (1..=n).collect::<Vec<_>>(), "every row, in order");
    assert!(batches.iter().all(|b| *b <= 10_000), "{batches:?}");

    // Resumed inside the inline part, at its edge, and in the spool.
    for start_row in [10, 1000, 45_678, n as u64 - 1, n as u64] {
        let (_, rows, _) = read_result(&mut client, read_request(&job.id, "", start_row))
            .await
            .unwrap();
        assert_eq!(
            rows,
            (start_row as i64 + 1..=n).collect::<Vec<_>>(),
            "from {start_row}"
        );
    }
    let past = read_result(&mut client, read_request(&job.id, "", n as u64 + 1))
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");
}

async fn a_refcursor_output_is_kept_whole_too(store: Store) {
    let gw = gateway(store, &["--max-cursor-rows", "100"]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, open_numbers(2_500)).await;
    let done = wait_state(&client, &job.id, pb::JobState::Completed).await;
    let inline = inline_set(&done, Some("rows"));
    assert_eq!((inline.rows.len(), inline.total_rows), (100, 2_500));
    let (_, rows, _) = read_result(&mut client, read_request(&job.id, "rows", 0))
        .await
        .unwrap();
    assert_eq!(rows, (1..=2_500).collect::<Vec<_>>());
}

async fn readers_say_what_is_wrong(store: Store) {
    let (_dir, path) = token_file(TOKENS);
    let gw = gateway(store, &["--token-file", &path, "--max-cursor-rows", "10"]).await;
    let mut client = gw.client().await;
    let alice = "alice-secret-1";
    let job = client
        .submit_async(as_user(
            pb::SubmitAsyncRequest {
                call: Some(numbers(50)),
                request_id: String::new(),
                ..Default::default()
            },
            alice,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut watch = client.clone();
    let done = eventually(std::time::Duration::from_secs(20), "the job ends", || {
        let mut client = watch.clone();
        let id = job.id.clone();
        async move {
            let job = client
                .get_job(as_user(
                    pb::GetJobRequest {
                        id,
                        ..Default::default()
                    },
                    alice,
                ))
                .await
                .ok()?
                .into_inner();
            (job.state == pb::JobState::Completed as i32).then_some(job)
        }
    })
    .await;
    let (_, rows, _) = read_result(&mut watch, as_user(read_request(&done.id, "", 0), alice))
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);

    let code = |status: tonic::Status| (status.code(), status.message().to_string());
    let bobs = read_result(
        &mut client,
        as_user(read_request(&job.id, "", 0), "bob-secret-22"),
    )
    .await
    .unwrap_err();
    assert_eq!(bobs.code(), Code::NotFound, "another owner's job: {bobs:?}");
    let (c, message) = code(
        read_result(
            &mut client,
            as_user(read_request(&job.id, "nope", 0), alice),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(c, Code::NotFound);
    assert!(
        message.contains("\"nope\"") && message.contains("the function's result"),
        "{message}"
    );
    let unknown = read_result(
        &mut client,
        as_user(
            read_request(&uuid::Uuid::new_v4().to_string(), "", 0),
            alice,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let running = client
        .submit_async(as_user(
            pb::SubmitAsyncRequest {
                call: Some(call("nap", vec![p_in("seconds", Kind::FloatValue(30.0))])),
                request_id: String::new(),
                ..Default::default()
            },
            alice,
        ))
        .await
        .unwrap()
        .into_inner();
    let (c, message) = code(
        read_result(
            &mut client,
            as_user(read_request(&running.id, "", 0), alice),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(c, Code::FailedPrecondition);
    assert!(message.contains("COMPLETED"), "{message}");

    // Deleted: the rows are gone at once.
    client
        .delete_job(as_user(pb::DeleteJobRequest { id: job.id.clone() }, alice))
        .await
        .unwrap();
    let deleted = read_result(&mut client, as_user(read_request(&job.id, "", 0), alice))
        .await
        .unwrap_err();
    assert_eq!(deleted.code(), Code::NotFound);
}

async fn a_result_over_the_spool_cap_fails_its_job_and_frees_the_spool(store: Store) {
    let gw = gateway(
        store,
        &["--max-cursor-rows", "10", "--max-spool-bytes", "200000"],
    )
    .await;
    let mut client = gw.client().await;
    let job = submit(&mut client, numbers(100_000)).await;
    let failed = wait_state(&client, &job.id, pb::JobState::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(error.code, Code::ResourceExhausted as i32, "{error:?}");
    assert!(
        error.message.contains("--max-spool-bytes"),
        "{}",
        error.message
    );
    // What it spooled was freed: a result that fits is kept.
    let job = submit(&mut client, numbers(5_000)).await;
    wait_state(&client, &job.id, pb::JobState::Completed).await;
    let (_, rows, _) = read_result(&mut client, read_request(&job.id, "", 0))
        .await
        .unwrap();
    assert_eq!(rows.len(), 5_000);
    if let Store::Database = store {
        let left = gw
            .sql(
                "SELECT count(*) FROM public.procgate_job_results r JOIN public.procgate_jobs j \
                  ON j.id = r.job_id WHERE j.state = 'FAILED'",
            )
            .await;
        assert_eq!(left[0].get::<_, i64>(0), 0, "a failed job keeps no rows");
    }
}

async fn big_jobs_do_not_break_the_jobs_api(store: Store) {
    // Inline results of about 400 KB each, in a gateway that answers at
    // most 1 MB: full views are refused with OUT_OF_RANGE, basic ones work.
    let gw = gateway(
        store,
        &[
            "--max-cursor-rows",
            "100000",
            "--max-inline-result-bytes",
            "100MiB",
            "--max-response-bytes",
            "1000000",
        ],
    )
    .await;
    let mut client = gw.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = submit(&mut client, numbers(30_000)).await;
        wait_state(&client, &job.id, pb::JobState::Completed).await;
        ids.push(job.id);
    }
    let page = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.jobs.len(), 3);
    for job in &page.jobs {
        assert!(job.outputs.is_empty() && job.return_value.is_none() && job.params.is_empty());
        assert_eq!(job.state, pb::JobState::Completed as i32);
    }
    let full = client
        .list_jobs(pb::ListJobsRequest {
            view: pb::JobView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::OutOfRange, "{full:?}");
    assert!(full.message().contains("--max-response-bytes"), "{full:?}");
    assert!(full.message().contains("JOB_VIEW_BASIC"), "{full:?}");
    let one = client
        .get_job(pb::GetJobRequest {
            id: ids[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inline_set(&one, None).rows.len(), 30_000, "one job fits");
    let basic = client
        .get_job(pb::GetJobRequest {
            id: ids[0].clone(),
            view: pb::JobView::Basic as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(basic.return_value.is_none());
    let bad = client
        .get_job(pb::GetJobRequest {
            id: ids[0].clone(),
            view: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

on_both_stores!(
    a_big_result_is_kept_whole_and_read_from_any_row,
    a_refcursor_output_is_kept_whole_too,
    readers_say_what_is_wrong,
    a_result_over_the_spool_cap_fails_its_job_and_frees_the_spool,
    big_jobs_do_not_break_the_jobs_api,
);

/// In memory mode the rows are files under --spool-dir, removed with their
/// job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_spools_to_files_that_go_with_their_job() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().to_string_lossy().into_owned();
    let gw = Gateway::start(&["--max-cursor-rows", "10", "--spool-dir", &spool_dir]).await;
    let mut client = gw.client().await;
    let files = || -> usize {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|own| std::fs::read_dir(own.path()).map_or(0, |f| f.count()))
            .sum()
    };
    let job = submit(&mut client, numbers(20_000)).await;
    wait_state(&client, &job.id, pb::JobState::Completed).await;
    assert_eq!(files(), 1);
    client
        .delete_job(pb::DeleteJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    assert_eq!(files(), 0, "DeleteJob removes the spool at once");
}

/// In database mode any instance serves a job's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_serves_the_spooled_rows() {
    let db = migrated_db().await;
    let args = [
        "--job-store",
        "database",
        "--max-cursor-rows",
        "10",
        "--job-store-poll-interval",
        "200ms",
    ];
    let a = Gateway::start_url(&db.url(), &args).await;
    let b = Gateway::start_url(&db.url(), &args).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let job = submit(&mut on_a, numbers(25_000)).await;
    wait_state(&on_a, &job.id, pb::JobState::Completed).await;
    let (_, rows, _) = read_result(&mut on_b, read_request(&job.id, "", 12_345))
        .await
        .unwrap();
    assert_eq!(rows, (12_346..=25_000).collect::<Vec<_>>());
}

/// In database mode a deletion takes the spooled rows at once: a read in
/// progress ends with NOT_FOUND, never as a short result that looks whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cut_short_by_a_deletion_says_so() {
    let gw = gateway(Store::Database, &["--max-cursor-rows", "10"]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, numbers(300_000)).await;
    wait_state(&client, &job.id, pb::JobState::Completed).await;
    let mut parts = client
        .read_job_result(read_request(&job.id, "", 0))
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    while rows < 20_000 {
        if let Some(Part::Rows(batch)) = parts.next().await.unwrap().unwrap().kind {
            rows += batch.rows.len();
        }
    }
    client
        .delete_job(pb::DeleteJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    let ended = loop {
        match parts.next().await {
            Some(Ok(part)) => {
                if let Some(Part::Rows(batch)) = part.kind {
                    rows += batch.rows.len();
                }
            }
            Some(Err(status)) => break status,
            None => panic!("the read ended OK after {rows} of 300000 rows"),
        }
    };
    assert_eq!(ended.code(), Code::NotFound, "{ended:?}");
    assert!(ended.message().contains("deleted while"), "{ended:?}");
}

/// Open reads are bounded (--max-result-readers); one more is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_are_bounded() {
    let gw = Gateway::start(&["--max-cursor-rows", "10", "--max-result-readers", "1"]).await;
    let mut client = gw.client().await;
    let job = submit(&mut client, numbers(100_000)).await;
    wait_state(&client, &job.id, pb::JobState::Completed).await;
    let open = client
        .read_job_result(read_request(&job.id, "", 0))
        .await
        .unwrap()
        .into_inner();
    let refused = read_result(&mut client, read_request(&job.id, "", 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-result-readers"),
        "{refused:?}"
    );
    drop(open);
    eventually(
        std::time::Duration::from_secs(10),
        "the reader's slot to free",
        || {
            let mut client = client.clone();
            let id = job.id.clone();
            async move {
                read_result(&mut client, read_request(&id, "", 99_990))
                    .await
                    .ok()
            }
        },
    )
    .await;
}
