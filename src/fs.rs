//! Crash-safe writing: atomic file writes (a crash never leaves a half-written file under the
//! final name), atomic folder swaps, and folder locks (two processes never write one folder).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::data(path, format!("cannot serialise: {e}")))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// The largest JSON file the platform reads (configs, manifests, states: all small).
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// Reads and parses a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_JSON_BYTES {
        return Err(Error::data(
            path,
            format!(
                "{} of JSON, more than the {} a configuration or manifest can be",
                crate::limits::human_bytes(len),
                crate::limits::human_bytes(MAX_JSON_BYTES)
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(path, format!("invalid JSON: {e}")))
}

/// `dir/.name.tmp-PID`: hidden, beside the target so the rename stays on one file system.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

pub fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Removes the file `path`; one that is not there is fine.
pub fn remove_file_if_present(path: &Path) -> Result<()> {
    not_found_is_fine(path, std::fs::remove_file(path))
}

/// Removes the folder `path` and everything in it; one that is not there is fine.
pub fn remove_dir_if_present(path: &Path) -> Result<()> {
    not_found_is_fine(path, std::fs::remove_dir_all(path))
}

fn not_found_is_fine(path: &Path, r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Makes writing past a file-size limit (`ulimit -f`) an error that the writer reports, as a
/// full disk is, instead of the signal (`SIGXFSZ`) that would kill the process mid-write.
pub fn report_write_limits_as_errors() {
    #[cfg(unix)]
    // SAFETY: ignoring a signal installs no handler code; it only changes its disposition.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Errors unless `name` (the `what` of a config: an experiment or stage name) can be one
/// folder's name: 1–100 characters of letters, digits, `-`, `_` and `.`, not `.` or `..`.
pub fn check_folder_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} `{name}` cannot name a folder: use 1–100 letters, digits, `-`, `_` or `.` (not `.` or `..`)"
        )))
    }
}

/// Whether `name` is a temporary file or folder of [`temp_path`] or a swap (`.x.tmp-PID`,
/// `.x.old-PID`): left behind only by a process that was killed, never part of a result.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-"))
}

/// Puts folder `new` in the place of folder `dir` in one step and returns where the previous
/// contents went (`new`'s old path), for the caller to remove. On Linux the two are exchanged
/// atomically (`renameat2` with `RENAME_EXCHANGE`), so `dir` exists at every instant; elsewhere
/// `dir` is moved aside first and is missing between the two renames.
pub fn swap_dir(new: &Path, dir: &Path) -> Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| Error::data(p, "path holds a NUL byte"))
        };
        let (a, b) = (c(new)?, c(dir)?);
        // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(new.to_path_buf());
        }
        let err = std::io::Error::last_os_error();
        // File systems without the exchange fall back to two renames.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(Error::io(dir, err));
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let old = dir.with_file_name(format!(".{name}.old-{}", std::process::id()));
    std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    std::fs::rename(new, dir).map_err(|e| Error::io(dir, e))?;
    Ok(old)
}

/// An exclusive lock on a folder that one process writes (a run, a dataset, an experiment):
/// the OS's advisory lock on the file `.NAME.lock` beside the folder (beside, because checkpoint
/// folders are swapped whole), held while the value lives. The OS releases it when the process
/// ends in any way, `kill -9` included, so a crash never leaves a stale lock behind (at most an
/// unlocked file, which the next taker reuses).
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl FolderLock {
    /// The lock file of `dir`.
    pub fn path_for(dir: &Path) -> PathBuf {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "folder".into());
        dir.with_file_name(format!(".{name}.lock"))
    }

    /// Takes the lock of `dir` (creating its parent), or fails at once naming the process that
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        Self::take(dir, false)
    }

    /// Takes the lock of `dir`, waiting while another process holds it.
    pub fn acquire_blocking(dir: &Path) -> Result<Self> {
        Self::take(dir, true)
    }

    fn take(dir: &Path, wait: bool) -> Result<Self> {
        let path = Self::path_for(dir);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all(parent)?;
        }
        loop {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if wait {
                file.lock().map_err(|e| Error::io(&path, e))?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => {
                        let holder = std::fs::read_to_string(&path).unwrap_or_default();
                        let holder = holder.trim();
                        let who = if holder.is_empty() {
                            "another process".to_string()
                        } else {
                            format!("another process ({holder})")
                        };
                        return Err(Error::Config(format!(
                            "{}: {who} is writing to this folder (lock {}); wait for it to finish or write elsewhere",
                            dir.display(),
                            path.display()
                        )));
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
                }
            }
            // The holder removes the file when it lets go: a lock taken on a file that was
            // removed (or replaced) meanwhile guards nothing, so take it again.
            if !same_file(&file, &path) {
                continue;
            }
            // Who holds it, for the message another process prints.
            file.set_len(0).map_err(|e| Error::io(&path, e))?;
            write!(file, "pid {}", std::process::id()).map_err(|e| Error::io(&path, e))?;
            return Ok(Self { _file: file, path });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FolderLock {
    /// Removes the lock file while still holding the lock (a process that opened it meanwhile
    /// sees it replaced and retries), so finished runs leave no lock files behind.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the open `file` is the file now at `path`.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = FolderLock::acquire(&run).unwrap();
        let e = FolderLock::acquire(&run).unwrap_err().to_string();
        assert!(
            e.contains("run") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(!dir.path().join(".run.lock").exists());
        let again = FolderLock::acquire(&run).unwrap();
        assert_eq!(again.path(), dir.path().join(".run.lock"));
        // A waiting taker gets it once the holder lets go.
        let waiter = std::thread::spawn(move || FolderLock::acquire_blocking(&run).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(again);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn a_swap_puts_the_new_folder_in_place_and_hands_back_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("ckpt"), dir.path().join(".ckpt.tmp-1"));
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("v"), "old").unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("v"), "new").unwrap();
        let old = swap_dir(&b, &a).unwrap();
        assert_eq!(std::fs::read_to_string(a.join("v")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(old.join("v")).unwrap(), "old");
        assert!(is_temp_name(".ckpt.tmp-1") && is_temp_name(".x.old-7"));
        assert!(!is_temp_name("metrics.jsonl") && !is_temp_name("tmp-1"));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_json_atomic(&p, &serde_json::json!({"x": 1})).unwrap();
        write_json_atomic(&p, &serde_json::json!({"x": 2})).unwrap();
        let v: serde_json::Value = read_json(&p).unwrap();
        assert_eq!(v["x"], 2);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        let e = read_json::<serde_json::Value>(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json"));
    }
}
