//! Group commit: what it takes to make an acknowledged sled write survive a crash.
//!
//! sled 0.34's `flush` writes its log buffers with `pwrite` and then only calls
//! `sync_file_range` on Linux (sled issue #1452): that starts write-back of the data
//! pages but neither flushes the drive's write cache nor persists file metadata such as
//! a grown file size, and large pages written as separate blob files are never synced.
//! So after `flush` we `fdatasync` the log file, `fsync` every blob file created since
//! the last flush and the blob directory. One flusher thread does this for all writers:
//! writes that arrive while a flush runs share the next one.

use super::{Inner, Revision};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The durable point of the store, broadcast to waiting writers.
#[derive(Clone, Debug)]
pub(super) struct Durable {
    /// Every write at or below this revision is durable and readable (watchers hear of
    /// it right after).
    pub revision: Revision,
    /// Set when a flush failed: the store stops accepting writes.
    pub failure: Option<String>,
}

/// The files a flush must sync beyond what sled itself does.
pub(super) struct DurableFiles {
    log_file: File,
    dir: PathBuf,
    blob_dir: PathBuf,
    /// Blob files are named by increasing log sequence numbers: those at or below this
    /// one are known to be synced.
    blobs_synced: Mutex<u64>,
}

impl DurableFiles {
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        Ok(DurableFiles {
            log_file: File::open(dir.join("db"))?,
            dir: dir.to_path_buf(),
            blob_dir: dir.join("blobs"),
            blobs_synced: Mutex::new(0),
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.log_file.sync_data()?;
        let mut synced = self.blobs_synced.lock().unwrap_or_else(|e| e.into_inner());
        let first_time = *synced == 0;
        let mut newest = *synced;
        if let Ok(entries) = std::fs::read_dir(&self.blob_dir) {
            for entry in entries.flatten() {
                let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                if id <= *synced {
                    continue;
                }
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled removes blobs it no longer needs; a removed one needs no sync
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                newest = newest.max(id);
            }
        }
        if newest > *synced || first_time {
            File::open(&self.blob_dir)?.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            *synced = newest.max(1);
        }
        Ok(())
    }
}

/// Writes a small file and makes it and its directory entry durable.
pub(super) fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Inner {
    /// Makes every write applied so far durable.
    pub(super) fn make_durable(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.files.sync()
    }

    /// The flusher thread: flush, then make readable, acknowledge and publish what the
    /// flush covered.
    pub(super) fn run_flusher(&self) {
        loop {
            let (target, events) = {
                let mut w = self.lock_writer();
                while w.pending.is_empty() && !w.shutdown {
                    w = self.wake_flusher.wait(w).unwrap_or_else(|e| e.into_inner());
                }
                if w.pending.is_empty() {
                    return;
                }
                (w.revision, std::mem::take(&mut w.pending))
            };
            match self.make_durable() {
                Ok(()) => {
                    // reads first, then watchers: whoever learns of a change from a
                    // watch must be able to read it (a scheduler binding a pod it was
                    // just told about got 404 when this was the other way round)
                    self.durable.send_modify(|d| d.revision = target);
                    self.hub.publish(&events);
                }
                Err(e) => {
                    let failure = format!(
                        "writing to the datastore at {} failed ({e}); restart skua once the disk is healthy",
                        self.path.display()
                    );
                    tracing::error!(%failure);
                    self.lock_writer().failure = Some(failure.clone());
                    self.durable.send_modify(|d| d.failure = Some(failure));
                    return;
                }
            }
        }
    }
}
