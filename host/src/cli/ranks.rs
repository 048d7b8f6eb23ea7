//! `medtune train --gpus N`: starts one rank process per GPU (this binary with a hidden
//! `--rank`), forwards their messages, and names the rank that failed (`train::ranks` stops
//! the others).

use std::io::BufRead as _;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::train::TrainArgs;
use crate::train::{ranks, DataParallel, NCCL_ID_ENV};

/// Runs `args` on `world` GPUs; returns rank 0's exit code once every rank has finished.
pub fn launch(args: &TrainArgs, world: usize) -> anyhow::Result<ExitCode> {
    let id = DataParallel::new_id().context("creating the NCCL id of the run")?;
    let exe = std::env::current_exe().context("finding the medtune binary to start the ranks")?;
    let mut children = ranks::spawn(world, |rank| {
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
        cmd
    })
    .map_err(|(rank, e)| anyhow::Error::new(e).context(format!("starting rank {rank} of {world} ({})", exe.display())))?;
    let mut last_lines = Vec::with_capacity(world);
    let mut forwarders = Vec::with_capacity(world);
    for (rank, child) in children.iter_mut().enumerate() {
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
    }
    // a rank ends its part with success, or success with skipped records
    let statuses = ranks::wait(&mut children, |s| s.success() || s.code() == Some(i32::from(super::EXIT_PARTIAL)));
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
