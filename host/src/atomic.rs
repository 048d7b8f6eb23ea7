//! Writing output files atomically: a temporary file in the same folder, then a rename; whole
//! ([`write()`]) or streamed ([`Writer`], renamed by `commit`, removed when dropped uncommitted).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that readers see the old file or the whole new one.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; outputs are ordinary files.
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A file written piece by piece into a temporary file beside `path`, which replaces `path`
/// only on [`Writer::commit`]; dropped without it, the temporary file goes and `path` stays as
/// it was.
pub struct Writer {
    path: std::path::PathBuf,
    out: std::io::BufWriter<tempfile::NamedTempFile>,
}

impl Writer {
    /// A new writer for `path` (its folder is created).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        Ok(Self { path: path.to_owned(), out: std::io::BufWriter::with_capacity(1 << 20, tmp) })
    }

    /// The temporary file's path (to read back what was written, after [`Writer::flush`]).
    pub fn temp_path(&self) -> &Path {
        self.out.get_ref().path()
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> std::io::Result<()> {
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed file replaces the old one only when committed; dropped, it leaves the old
    /// one as it was and no temporary file behind.
    #[test]
    fn a_streamed_file_appears_whole_on_commit_and_not_at_all_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out/train.jsonl");
        let mut w = Writer::create(&path).expect("create");
        w.write_all(b"one\n").expect("write");
        assert!(!path.exists(), "visible before commit");
        w.commit().expect("commit");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n");
        let mut w = Writer::create(&path).expect("create");
        w.write_all(b"two\n").expect("write");
        w.flush().expect("flush");
        assert_eq!(std::fs::read_to_string(w.temp_path()).expect("the temporary file"), "two\n");
        drop(w);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\n", "an uncommitted writer replaced the file");
        assert_eq!(std::fs::read_dir(path.parent().expect("folder")).expect("list").count(), 1, "a temporary file was left");
    }
}
