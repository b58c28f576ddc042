//! Following jobs live: one progress bar per job on a terminal, one plain
//! line per change otherwise (logs, CI, pipes).
//!
//! Each job gets its own WatchJob stream on a shared channel; the function
//! returns every job's terminal snapshot.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tonic::Status;

use super::Client;
use super::render::{is_indeterminate, progress_text, short_id, state_name};
use crate::proto::{self as pb};

/// Watches every job to its end; returns their terminal snapshots in order.
pub async fn follow(client: &Client, ids: &[String]) -> Result<Vec<pb::Job>, Status> {
    let bars = std::io::stdout().is_terminal().then(MultiProgress::new);
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30.cyan/blue}] {pos:>3}% {msg} ({elapsed})",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    // Running, amount unknown yet: a spinner rather than a bar stuck at 2 %.
    let spinner =
        ProgressStyle::with_template("{prefix:.bold} [{spinner:.cyan}] {msg} ({elapsed})")
            .expect("a valid template");
    let started = Instant::now();
    let mut watchers = Vec::new();
    for id in ids {
        let bar = bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(100).with_style(style.clone()));
            bar.set_prefix(short_id(id).to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let mut client = client.clone();
        let id = id.clone();
        let (style, spinner) = (style.clone(), spinner.clone());
        watchers.push(tokio::spawn(async move {
            let mut stream = client
                .watch_job(pb::WatchJobRequest {
                    id: id.clone(),
                    since_revision: 0,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut last = None;
            while let Some(job) = stream.message().await? {
                let state = state_name(job.state);
                match &bar {
                    Some(bar) => {
                        bar.set_prefix(format!("{} {}", short_id(&job.id), job.procedure));
                        bar.set_style(if is_indeterminate(&job) {
                            spinner.clone()
                        } else {
                            style.clone()
                        });
                        bar.set_position(job.progress.into());
                        bar.set_message(format!("{state} {}", job.progress_message));
                    }
                    None => println!(
                        "{} {state:<9} {:>4} {} ({:.1}s)",
                        short_id(&job.id),
                        progress_text(&job),
                        job.progress_message,
                        started.elapsed().as_secs_f64()
                    ),
                }
                last = Some(job);
            }
            if let (Some(bar), Some(job)) = (&bar, &last) {
                let message = format!("{} {}", state_name(job.state), job.progress_message);
                if job.state == pb::JobState::Completed as i32 {
                    bar.finish_with_message(message);
                } else {
                    bar.abandon_with_message(message); // keeps where it stopped
                }
            }
            last.ok_or_else(|| Status::internal(format!("WatchJob {id} ended without a snapshot")))
        }));
    }
    let mut ended = Vec::new();
    for watcher in watchers {
        ended.push(
            watcher
                .await
                .map_err(|e| Status::internal(format!("a watcher failed: {e}")))??,
        );
    }
    Ok(ended)
}
