//! The memory mode's spool: one file per spooled output, in a directory of
//! this process's own under `--spool-dir` (the system's temporary directory
//! by default), removed when the process ends. Its chunk index stays in
//! memory, so a resumed read seeks straight to its row.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use uuid::Uuid;

use super::codec::{self, Chunk};
use super::{Spool, SpoolReader, SpoolWriter, gone, over_cap};
use crate::error::{Error, Result};
use crate::proto as pb;

pub struct FileSpool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Removes the directory when the spool goes.
    _temp: tempfile::TempDir,
    cap: u64,
    /// Bytes of every file, written or being written.
    used: AtomicU64,
    files: AtomicU64,
    /// The finished outputs of each job.
    kept: Mutex<HashMap<Uuid, Vec<Kept>>>,
}

#[derive(Clone)]
struct Kept {
    output: String,
    path: PathBuf,
    bytes: u64,
    chunks: Vec<ChunkAt>,
}

#[derive(Clone, Copy)]
struct ChunkAt {
    first_row: u64,
    rows: u32,
    offset: u64,
    len: u64,
}

impl FileSpool {
    /// A spool in a new directory of its own under `parent` (or the
    /// system's temporary directory), holding at most `cap` bytes.
    pub fn create(parent: Option<&Path>, cap: u64) -> Result<FileSpool> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("procgate-spool-");
        let temp = match parent {
            Some(parent) => std::fs::create_dir_all(parent)
                .and_then(|_| builder.tempdir_in(parent))
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "--spool-dir {}: cannot create a directory in it: {e}",
                        parent.display()
                    ))
                })?,
            None => builder.tempdir().map_err(|e| {
                Error::Unavailable(format!(
                    "cannot create the spool's temporary directory (set --spool-dir): {e}"
                ))
            })?,
        };
        Ok(FileSpool {
            inner: Arc::new(Inner {
                dir: temp.path().to_path_buf(),
                _temp: temp,
                cap,
                used: AtomicU64::new(0),
                files: AtomicU64::new(0),
                kept: Mutex::default(),
            }),
        })
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Kept>>> {
        self.kept.lock().expect("spool lock")
    }

    fn reserve(&self, bytes: u64) -> Result<()> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.cap)
            })
            .map(|_| ())
            .map_err(|_| over_cap(self.cap, "this instance's spool"))
    }

    fn free(&self, path: &Path, bytes: u64) {
        // Gone already is fine: a reader may hold it open, and reads on.
        let _ = std::fs::remove_file(path);
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

#[async_trait]
impl Spool for FileSpool {
    async fn writer(&self, job: Uuid, output: &str) -> Result<Box<dyn SpoolWriter>> {
        let n = self.inner.files.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.dir.join(format!("{job}.{n}.rows"));
        let file = tokio::fs::File::create(&path).await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot create a spool file in {}: {e}",
                self.inner.dir.display()
            ))
        })?;
        Ok(Box::new(FileWriter {
            spool: self.inner.clone(),
            job,
            file: Some(BufWriter::new(file)),
            kept: Kept {
                output: output.to_string(),
                path,
                bytes: 0,
                chunks: Vec::new(),
            },
            finished: false,
        }))
    }

    async fn reader(&self, job: Uuid, output: &str, skip: u64) -> Result<Box<dyn SpoolReader>> {
        let kept = self
            .inner
            .kept()
            .get(&job)
            .and_then(|outputs| outputs.iter().find(|k| k.output == output).cloned())
            .ok_or_else(|| gone(job, output))?;
        // Opened now: a deletion while it reads unlinks the file, not the data.
        let file = tokio::fs::File::open(&kept.path)
            .await
            .map_err(|_| gone(job, output))?;
        let chunks = kept
            .chunks
            .into_iter()
            .filter(|c| c.first_row + u64::from(c.rows) > skip)
            .collect();
        Ok(Box::new(FileReader { file, chunks, skip }))
    }

    fn forget(&self, job: Uuid) {
        let outputs = self.inner.kept().remove(&job).unwrap_or_default();
        for kept in outputs {
            self.inner.free(&kept.path, kept.bytes);
        }
    }
}

struct FileWriter {
    spool: Arc<Inner>,
    job: Uuid,
    file: Option<BufWriter<tokio::fs::File>>,
    kept: Kept,
    finished: bool,
}

fn write_failed(e: std::io::Error) -> Error {
    Error::Unavailable(format!("writing the job's result to the spool failed: {e}"))
}

#[async_trait]
impl SpoolWriter for FileWriter {
    async fn append(&mut self, chunk: Chunk) -> Result<()> {
        let len = chunk.data.len() as u64;
        self.spool.reserve(len)?;
        self.kept.bytes += len;
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(&chunk.data).await.map_err(write_failed)?;
        let offset = self.kept.chunks.last().map_or(0, |c| c.offset + c.len);
        self.kept.chunks.push(ChunkAt {
            first_row: chunk.first_row,
            rows: chunk.rows,
            offset,
            len,
        });
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        let mut file = self.file.take().expect("open until finished");
        file.flush().await.map_err(write_failed)?;
        self.finished = true;
        let kept = self.kept.clone();
        self.spool.kept().entry(self.job).or_default().push(kept);
        Ok(())
    }

    async fn discard(self: Box<Self>) {}
}

impl Drop for FileWriter {
    /// Unfinished (the job failed, or its task went): frees what it wrote.
    fn drop(&mut self) {
        if !self.finished {
            self.file = None;
            self.spool.free(&self.kept.path, self.kept.bytes);
        }
    }
}

struct FileReader {
    file: tokio::fs::File,
    chunks: std::collections::VecDeque<ChunkAt>,
    skip: u64,
}

#[async_trait]
impl SpoolReader for FileReader {
    async fn next(&mut self) -> Result<Option<Vec<pb::Row>>> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Ok(None);
        };
        let read_failed =
            |e: std::io::Error| Error::Unavailable(format!("reading the spool failed: {e}"));
        self.file
            .seek(SeekFrom::Start(chunk.offset))
            .await
            .map_err(read_failed)?;
        let mut data = vec![0; chunk.len as usize];
        self.file.read_exact(&mut data).await.map_err(read_failed)?;
        let skip = self.skip.saturating_sub(chunk.first_row) as usize;
        codec::decode(&data, skip).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Value;

    fn rows(from: i64, n: i64) -> Vec<Vec<Value>> {
        (from..from + n).map(|i| vec![Value::Integer(i)]).collect()
    }

    async fn read_all(spool: &FileSpool, job: Uuid, skip: u64) -> Result<Vec<pb::Row>> {
        let mut reader = spool.reader(job, "cur", skip).await?;
        let mut all = Vec::new();
        while let Some(rows) = reader.next().await? {
            all.extend(rows);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn rows_are_read_back_from_any_row_and_freed_when_forgotten() {
        let spool = FileSpool::create(None, 1 << 20).unwrap();
        let job = Uuid::new_v4();
        let mut writer = spool.writer(job, "cur").await.unwrap();
        writer.append(Chunk::encode(0, &rows(0, 10))).await.unwrap();
        writer
            .append(Chunk::encode(10, &rows(10, 5)))
            .await
            .unwrap();
        writer.finish().await.unwrap();
        assert_eq!(read_all(&spool, job, 0).await.unwrap().len(), 15);
        let tail = read_all(&spool, job, 12).await.unwrap();
        assert_eq!(
            tail,
            [12, 13, 14].map(|i| crate::api::convert::row_to_proto(&[Value::Integer(i)]))
        );
        assert!(spool.inner.used.load(Ordering::SeqCst) > 0);
        spool.forget(job);
        assert_eq!(spool.inner.used.load(Ordering::SeqCst), 0);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 0);
        assert!(matches!(
            read_all(&spool, job, 0).await,
            Err(Error::ResultNotFound(_))
        ));
    }

    #[tokio::test]
    async fn past_the_cap_a_writer_fails_and_an_unfinished_one_frees_its_file() {
        let chunk = Chunk::encode(0, &rows(0, 100));
        let spool = FileSpool::create(None, chunk.data.len() as u64 + 10).unwrap();
        let job = Uuid::new_v4();
        let mut writer = spool.writer(job, "cur").await.unwrap();
        writer.append(chunk.clone()).await.unwrap();
        let error = writer.append(chunk).await.unwrap_err();
        assert!(error.to_string().contains("--max-spool-bytes"), "{error}");
        drop(writer);
        assert_eq!(spool.inner.used.load(Ordering::SeqCst), 0);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 0);
    }
}
