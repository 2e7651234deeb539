//! Every file the project writes (images, decoders, checkpoints) goes through
//! here: written to a temp file in the destination's directory, fsynced, then
//! renamed over the target, so a crash or kill never leaves a half-written file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// A temp file beside `path` (same directory, so the rename is atomic) whose
/// name ends in `suffix`, with the mode any new file gets (tempfile's 0600 is
/// wrong for a normal output: 0666 less the umask, like File::create).
fn temp_beside<'a>(path: &'a Path, suffix: &str) -> Result<(tempfile::NamedTempFile, &'a Path)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(suffix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    Ok((tmp, dir))
}

/// The prefix of every temporary file (`PREFIX*` beside a final name is a
/// write that never finished: a killed process's, safe to delete).
pub const TEMP_PREFIX: &str = ".adain-tmp-";

/// Test-only fault injection: with `ADAIN_FAULT_COMMIT_DELAY_MS=N` every
/// atomic write sleeps N ms between writing its temp file and renaming it,
/// widening the window a kill can land in (`scripts/kill-campaign.sh`).
fn commit_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("ADAIN_FAULT_COMMIT_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// Removes the temp files ([`TEMP_PREFIX`]) a killed writer left in `dir`;
/// returns how many. Only for a directory no other process writes to (a
/// run directory under its lock).
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            std::fs::remove_file(e.path()).with_context(|| {
                format!("{}: cannot remove stale temp file", e.path().display())
            })?;
            n += 1;
        }
    }
    Ok(n)
}

/// fsyncs the temp file, renames it to `path` and makes the rename durable.
fn commit(tmp: tempfile::NamedTempFile, dir: &Path, path: &Path, overwrite: bool) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("{}: fsync failed", path.display()))?;
    if let Some(d) = commit_delay() {
        std::thread::sleep(d);
    }
    if overwrite {
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("{}: cannot rename into place", path.display()))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| e.error)
            .with_context(|| {
                format!(
                    "{}: already exists (use --overwrite to replace it)",
                    path.display()
                )
            })?;
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks a destination before any work: never one of the `inputs`
/// (canonical paths), and (without `overwrite`) not an existing file.
pub fn check_destination(
    p: &Path,
    inputs: &std::collections::BTreeSet<std::path::PathBuf>,
    overwrite: bool,
) -> Result<()> {
    if p.canonicalize()
        .map(|c| inputs.contains(&c))
        .unwrap_or(false)
    {
        anyhow::bail!("{}: is an input; refusing to write over it", p.display());
    }
    if p.exists() && !overwrite {
        anyhow::bail!(
            "{}: already exists (use --overwrite to replace it)",
            p.display()
        );
    }
    Ok(())
}

/// Writes `path` atomically with the bytes `write` produces. With
/// `overwrite == false` an existing `path` is an error (and is left untouched).
pub fn write_with<F>(path: &Path, overwrite: bool, write: F) -> Result<()>
where
    F: FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> Result<()>,
{
    let (mut tmp, dir) = temp_beside(path, "")?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut w).with_context(|| format!("{}: write failed", path.display()))?;
        w.flush()
            .with_context(|| format!("{}: write failed", path.display()))?;
    }
    commit(tmp, dir, path, overwrite)
}

/// Replaces `path` atomically with a file that `write` creates at the path it
/// is given (for writers that take a path, such as plotters' bitmap backend,
/// which picks the format from the name: the temp path ends in `suffix`).
pub fn write_via_path<F>(path: &Path, suffix: &str, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let (tmp, dir) = temp_beside(path, suffix)?;
    write(tmp.path()).with_context(|| format!("{}: write failed", path.display()))?;
    commit(tmp, dir, path, true)
}

/// Atomically writes `bytes` to `path`, replacing it if it exists.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, true, |w| Ok(w.write_all(bytes)?))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_files_get_the_usual_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, plain) = (dir.path().join("a"), dir.path().join("b"));
        super::write_bytes(&ours, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
        // a writer that takes a path: it sees a temp name with the suffix, the
        // result lands under the final name with the same mode
        let via = dir.path().join("c.png");
        super::write_via_path(&via, ".png", |p| {
            assert!(p.to_string_lossy().ends_with(".png") && p != via);
            Ok(std::fs::write(p, b"y")?)
        })
        .unwrap();
        assert_eq!(std::fs::read(&via).unwrap(), b"y");
        assert_eq!(mode(&via), mode(&plain));
    }
}
