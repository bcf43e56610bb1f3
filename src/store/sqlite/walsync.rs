//! Group commit for SQLite. Writers commit with `synchronous=NORMAL` (the commit is written to
//! the WAL but not yet flushed to disk), then wait here: one task fsyncs the WAL file for every
//! writer that committed since its last fsync, and answers them all. A write is acknowledged only
//! after the fsync that covers it, so "durable before 2xx" holds, and concurrent writers share
//! one fsync instead of paying one each. (With `synchronous=NORMAL` in WAL mode SQLite itself
//! syncs the WAL before every checkpoint and the database after it.)
//!
//! The WAL is opened once and kept (again only when it was removed and created anew), so a
//! process out of descriptors still syncs. Only a failed `fdatasync` stops the process: a
//! failure to open the file loses nothing, and its waiters get the error (a shortage: a 503).

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::METRICS;

/// A WAL fsync or a commit this slow is logged as a warning: the disk is stalling every write.
pub const SLOW_DISK: std::time::Duration = std::time::Duration::from_secs(1);

/// Handle to the WAL syncer task.
#[derive(Debug, Clone)]
pub struct WalSync {
    tx: mpsc::UnboundedSender<oneshot::Sender<std::io::Result<()>>>,
}

/// The file behind a `sqlite://FILE[?…]` URL, unless it is in memory.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

impl WalSync {
    /// Starts the syncer for the database file `db`.
    pub fn start(db: PathBuf) -> WalSync {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<std::io::Result<()>>>();
        let mut wal = db.into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        tokio::spawn(async move {
            // The WAL, opened once and kept: opening it for every fsync failed (and stopped the
            // process) whenever the process was out of descriptors.
            let mut file: Option<std::fs::File> = None;
            while let Some(first) = rx.recv().await {
                let mut waiting = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiting.push(more);
                }
                let (path, held) = (wal.clone(), file.take());
                let done = tokio::task::spawn_blocking(move || {
                    let mut held = held;
                    let r = sync_wal(&path, &mut held);
                    (r, held)
                })
                .await;
                let Ok((result, held)) = done else {
                    // The runtime is shutting down: nobody is left to acknowledge.
                    for w in waiting {
                        let _ = w.send(Err(std::io::Error::other("shutting down")));
                    }
                    return;
                };
                file = held;
                match result {
                    Ok(()) => {
                        for w in waiting {
                            let _ = w.send(Ok(()));
                        }
                    }
                    Err(Failure::Open(e)) => {
                        // Not a lost fsync: nothing failed to reach the disk, it is only not
                        // flushed yet, and the next fsync that opens the file covers these
                        // frames too. The waiters are told their commit is not confirmed (out
                        // of files or memory: a 503 that says so).
                        tracing::warn!(error = %e, wal = %wal.display(), "cannot open the SQLite WAL to fsync it");
                        for w in waiting {
                            // The OS error itself: callers tell a shortage by its code.
                            let e = match e.raw_os_error() {
                                Some(code) => std::io::Error::from_raw_os_error(code),
                                None => std::io::Error::new(e.kind(), e.to_string()),
                            };
                            let _ = w.send(Err(e));
                        }
                    }
                    Err(Failure::Fsync(e)) => {
                        // A failed fsync leaves committed frames whose durability is unknown,
                        // and Linux may drop the failed pages, so a later fsync would "succeed"
                        // over a hole. Acknowledging anything more would be a lie: stop, as
                        // PostgreSQL does. (Whatever the error: ENOSPC or EIO from fsync means
                        // written pages did not reach the disk.)
                        tracing::error!(error = %e, wal = %wal.display(), "fsync of the SQLite WAL failed; stopping");
                        std::process::abort();
                    }
                }
            }
        });
        WalSync { tx }
    }

    /// Waits until everything committed before this call is on disk.
    ///
    /// # Errors
    /// When the fsync fails (the write must then not be acknowledged).
    pub async fn sync(&self) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| std::io::Error::other("the WAL syncer stopped"))?;
        rx.await.map_err(|_| std::io::Error::other("the WAL syncer stopped"))?
    }
}

/// Why a WAL sync failed.
#[derive(Debug)]
enum Failure {
    /// The WAL could not be opened (out of descriptors or memory, a permission): nothing was
    /// flushed, nothing was lost.
    Open(std::io::Error),
    /// `fdatasync` itself failed: written pages may be lost.
    Fsync(std::io::Error),
}

/// Flushes the WAL at `path` through `held`, the handle kept from the last sync, opened (again)
/// when there is none or the file at `path` is no longer the one held (removed and created
/// again: SQLite deletes the WAL when the last connection to the database closes). SQLite's
/// checkpoints truncate the WAL in place (`journal_size_limit`), which keeps the handle valid.
fn sync_wal(path: &std::path::Path, held: &mut Option<std::fs::File>) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt as _;
    // `stat` takes no descriptor.
    let now = match std::fs::metadata(path) {
        Ok(m) => (m.dev(), m.ino()),
        // No WAL file: every committed frame is already in the database file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            *held = None;
            return Ok(());
        }
        Err(e) => return Err(Failure::Open(e)),
    };
    let same = held.as_ref().and_then(|f| f.metadata().ok()).is_some_and(|m| (m.dev(), m.ino()) == now);
    if !same {
        *held = None;
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(f) => *held = Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Failure::Open(e)),
        }
    }
    let Some(f) = held.as_ref() else { return Ok(()) };
    let t = std::time::Instant::now();
    let r = f.sync_data();
    let took = t.elapsed();
    METRICS.wal_fsync.observe(took.as_secs_f64());
    if took >= SLOW_DISK {
        // Every acknowledgement waiting for it was held as long (etcd warns of a slow
        // fdatasync the same way).
        tracing::warn!(ms = took.as_millis() as u64, "slow fsync of the SQLite WAL");
    }
    r.map_err(Failure::Fsync)
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// WAL length (in frames of one page) past which the checkpointer makes the WAL start over: the
/// next writer then writes from the beginning of the file again. About 32 MiB.
const RESTART_FRAMES: i64 = 8192;

/// What a writer connection truncates the WAL file to when it starts the WAL over (64 MiB): the
/// file's pages stay cached for reuse, and an earlier burst does not keep a large file.
pub const JOURNAL_SIZE_LIMIT: &str = "PRAGMA journal_size_limit=67108864;";

/// A RESTART checkpoint's outcome as a metric label: `done`, `busy` (it waited for a reader of
/// old frames in vain: the WAL did not start over) or `error`.
fn outcome(r: &rusqlite::Result<(bool, i64)>) -> &'static str {
    match r {
        Ok((false, _)) => "done",
        Ok((true, _)) => "busy",
        Err(_) => "error",
    }
}

/// Starts the checkpointer of the database file `db`: a thread that copies committed WAL frames
/// into the database file (a PASSIVE checkpoint: it waits for no reader or writer). The
/// connections of this process have automatic checkpoints off: SQLite would otherwise run one
/// inside a writer's commit every 1,000 pages, holding the writer lock over its fsyncs.
///
/// SQLite starts the WAL over only when a write transaction begins after a checkpoint copied
/// all of it; under a steady write load a PASSIVE checkpoint never catches up with the writer,
/// and the WAL would grow without bound. So once the WAL is longer than `RESTART_FRAMES`, the checkpointer takes
/// `write_lock` (the store's in-process writer lock: no writer of this process runs meanwhile),
/// copies the rest and waits for readers of old frames (a RESTART checkpoint): the next commit
/// writes from the start of the file. Writers wait only for the frames written since the last
/// PASSIVE checkpoint.
///
/// The thread stops once the returned handle (kept by the store) is dropped.
///
/// # Errors
/// When the database cannot be opened.
pub fn start_checkpointer(
    db: PathBuf,
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
) -> anyhow::Result<std::sync::Arc<()>> {
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A RESTART waits (holding the writers) for readers of old frames: briefly, then it is
    // tried again at the next tick rather than stalling every write behind a long read.
    conn.execute_batch("PRAGMA busy_timeout=200; PRAGMA wal_autocheckpoint=0;")?;
    conn.execute_batch(JOURNAL_SIZE_LIMIT)?;
    let alive = std::sync::Arc::new(());
    let weak = std::sync::Arc::downgrade(&alive);
    // (busy, frames in the WAL) after a checkpoint.
    let checkpoint = move |mode: &str| -> rusqlite::Result<(bool, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)))
    };
    std::thread::Builder::new().name("wal-checkpoint".into()).spawn(move || {
        // Ticks to let pass before the next RESTART: a reader that keeps an old snapshot for
        // long (a long list, a backup) makes every RESTART wait its 200 ms holding the writers
        // and give up, so after each one that gave up the next waits twice as long (to 32 ticks).
        let (mut skip, mut backoff) = (0u32, 1u32);
        while weak.strong_count() > 0 {
            std::thread::sleep(CHECKPOINT_EVERY);
            let t = std::time::Instant::now();
            let passive = checkpoint("PASSIVE");
            METRICS.checkpoint("passive", if passive.is_ok() { "done" } else { "error" }, t.elapsed());
            match passive {
                Ok((_, frames)) if frames > RESTART_FRAMES && skip > 0 => skip -= 1,
                Ok((_, frames)) if frames > RESTART_FRAMES => {
                    let writers = write_lock.blocking_lock();
                    // What the writers wait for: from taking their lock to giving it back.
                    let t = std::time::Instant::now();
                    let restart = checkpoint("RESTART");
                    drop(writers);
                    METRICS.checkpoint("restart", outcome(&restart), t.elapsed());
                    match restart {
                        Ok((false, _)) => backoff = 1,
                        Ok((true, _)) => {
                            tracing::debug!(frames, "WAL restart waited for a reader in vain; backing off");
                            skip = backoff;
                            backoff = (backoff * 2).min(32);
                        }
                        Err(e) => tracing::warn!(error = %e, frames, "WAL restart checkpoint failed; retrying"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
            }
        }
    })?;
    Ok(alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the environment of the child that runs the scenario under a low open-file limit.
    const CHILD: &str = "MOONBORN_WALSYNC_EMFILE_CHILD";
    const SURVIVED: &str = "walsync child: survived";

    /// Opens `/dev/null` until the process is out of descriptors; the files taken.
    fn take_every_descriptor() -> Vec<std::fs::File> {
        let mut taken = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => taken.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    return taken;
                }
            }
        }
    }

    /// The child's part: commits, then syncs while the process has no descriptor left.
    fn out_of_descriptors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("w.db");
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t (k INTEGER);")
            .expect("schema");
        let insert = || conn.execute("INSERT INTO t (k) VALUES (1)", []).expect("insert");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        rt.block_on(async {
            let wal = WalSync::start(db.clone());
            insert();
            wal.sync().await.expect("a sync with descriptors to spare");
            // Out of descriptors: the kept handle still syncs.
            let taken = take_every_descriptor();
            insert();
            wal.sync().await.expect("a sync out of descriptors, through the kept handle");
            drop(taken);
            // The WAL gone (the handle is let go), then back: it must be opened again, which
            // fails while out of descriptors; the waiter gets the error, the process goes on.
            let wal_path = dir.path().join("w.db-wal");
            let away = dir.path().join("away");
            std::fs::rename(&wal_path, &away).expect("move the WAL away");
            wal.sync().await.expect("no WAL: nothing to sync");
            std::fs::rename(&away, &wal_path).expect("move the WAL back");
            let taken = take_every_descriptor();
            let e = wal.sync().await.expect_err("the new WAL cannot be opened");
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
            assert_eq!(crate::store::Shortage::of_io(&e), Some(crate::store::Shortage::OpenFiles));
            drop(taken);
            wal.sync().await.expect("a sync once descriptors are back");
        });
        println!("{SURVIVED}");
    }

    /// The WAL syncer of a process out of descriptors (`EMFILE`: idle sockets took them) keeps
    /// syncing through the handle it holds, and when it must open the WAL again and cannot, it
    /// fails that sync without stopping the process: failing to open a file loses no write. Run
    /// in a child of this test binary under `prlimit --nofile=64:64`, so that exhausting its
    /// descriptors disturbs no other test.
    #[test]
    fn the_syncer_out_of_descriptors_keeps_syncing_and_does_not_abort() {
        if std::env::var_os(CHILD).is_some() {
            return out_of_descriptors();
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new("prlimit")
            .args(["--nofile=64:64", "--"])
            .arg(exe)
            .args([
                "--exact",
                "store::sqlite::walsync::tests::the_syncer_out_of_descriptors_keeps_syncing_and_does_not_abort",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                println!("SKIPPED: cannot run prlimit: {e}");
                return;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stdout.contains(SURVIVED), "the child: {}\n{stdout}\n{stderr}", out.status);
    }
}
