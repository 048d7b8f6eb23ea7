//! `medtune train --gpus N`: starts one rank process per GPU (this binary with a hidden
//! `--rank`), forwards their messages, and stops them all when one fails.

use std::io::BufRead as _;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::train::TrainArgs;
use crate::train::{DataParallel, NCCL_ID_ENV};

/// Runs `args` on `world` GPUs; returns rank 0's exit code once every rank has finished.
pub fn launch(args: &TrainArgs, world: usize) -> anyhow::Result<ExitCode> {
    let id = DataParallel::new_id().context("creating the NCCL id of the run")?;
    let exe = std::env::current_exe().context("finding the medtune binary to start the ranks")?;
    let mut ranks: Vec<Child> = Vec::with_capacity(world);
    let mut last_lines = Vec::with_capacity(world);
    let mut forwarders = Vec::with_capacity(world);
    for rank in 0..world {
        let mut cmd = Command::new(&exe);
        cmd.arg("train").arg("--config").arg(&args.config).args(["--gpus", &world.to_string(), "--rank", &rank.to_string()]);
        if args.resume {
            cmd.arg("--resume");
        }
        if let Some(n) = args.stop_after {
            cmd.args(["--stop-after", &n.to_string()]);
        }
        // rank 0 prints the run's summary; every rank's stderr comes through here
        cmd.env(NCCL_ID_ENV, &id).stdin(Stdio::null()).stdout(if rank == 0 { Stdio::inherit() } else { Stdio::null() }).stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop(&mut ranks);
                return Err(e).with_context(|| format!("starting rank {rank} of {world} ({})", exe.display()));
            }
        };
        let last = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let keep = Arc::clone(&last);
            forwarders.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    if rank == 0 { eprintln!("{line}") } else { eprintln!("[rank {rank}] {line}") }
                    if let (false, Ok(mut l)) = (line.trim().is_empty(), keep.lock()) {
                        *l = line;
                    }
                }
            }));
        }
        last_lines.push(last);
        ranks.push(child);
    }
    let statuses = watch(&mut ranks);
    for f in forwarders {
        let _ = f.join();
    }
    let statuses = match statuses {
        Ok(s) => s,
        Err((rank, status)) => {
            let said = last_lines[rank].lock().map(|l| l.clone()).unwrap_or_default();
            let others: Vec<String> = (0..world).filter(|&r| r != rank).map(|r| r.to_string()).collect();
            anyhow::bail!(
                "rank {rank} of {world} (GPU {rank}) failed ({status}){}; stopped the other ranks ({})",
                if said.is_empty() { String::new() } else { format!(": {said}") },
                others.join(", ")
            );
        }
    };
    Ok(statuses.first().and_then(ExitStatus::code).map_or(ExitCode::FAILURE, |c| ExitCode::from(c as u8)))
}

/// Waits for every rank. The first that fails (exits other than 0 or with skipped records, or
/// is killed) has the others killed: a rank left waiting in an all-reduce for a dead peer
/// would wait forever.
fn watch(ranks: &mut [Child]) -> Result<Vec<ExitStatus>, (usize, ExitStatus)> {
    let mut done: Vec<Option<ExitStatus>> = vec![None; ranks.len()];
    while done.iter().any(Option::is_none) {
        for (rank, child) in ranks.iter_mut().enumerate() {
            if done[rank].is_some() {
                continue;
            }
            let status = match child.try_wait() {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                // a rank that cannot be waited for is as good as lost
                Err(_) => match child.kill().and_then(|()| child.wait()) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            done[rank] = Some(status);
            if !finished(status) {
                stop(ranks);
                return Err((rank, status));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(done.into_iter().flatten().collect())
}

/// Whether a rank ended its part of the run: success, or success with skipped records.
fn finished(status: ExitStatus) -> bool {
    status.success() || status.code() == Some(i32::from(super::EXIT_PARTIAL))
}

/// Kills and reaps every rank still running.
fn stop(ranks: &mut [Child]) {
    for child in ranks.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// A rank dies with the launcher (Linux): killed, the launcher cannot stop them itself.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
