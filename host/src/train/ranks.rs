//! The rank processes of a run on several GPUs: started so that they die with their launcher,
//! and watched so that one failing stops the others (a rank left waiting in an all-reduce for
//! a dead peer would wait forever).

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// Starts `world` processes, `command(rank)` each. If one cannot start, those already started
/// are stopped and the error names its rank.
pub fn spawn(world: usize, mut command: impl FnMut(usize) -> Command) -> Result<Vec<Child>, (usize, std::io::Error)> {
    let mut ranks = Vec::with_capacity(world);
    for rank in 0..world {
        let mut cmd = command(rank);
        die_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(child) => ranks.push(child),
            Err(e) => {
                stop(&mut ranks);
                return Err((rank, e));
            }
        }
    }
    Ok(ranks)
}

/// Waits for every rank. The first whose status is not `finished` (or that is killed) has the
/// others killed and is returned with its status.
pub fn wait(ranks: &mut [Child], finished: impl Fn(ExitStatus) -> bool) -> Result<Vec<ExitStatus>, (usize, ExitStatus)> {
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

/// Kills and reaps every rank still running.
fn stop(ranks: &mut [Child]) {
    for child in ranks.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// A rank dies with its launcher (Linux): killed, the launcher cannot stop them itself.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn a_failed_rank_stops_the_others_and_is_named() {
        let started = std::time::Instant::now();
        let mut ranks = spawn(3, |rank| sh(if rank == 1 { "sleep 0.2; exit 3" } else { "sleep 30" })).expect("spawn");
        let (rank, status) = wait(&mut ranks, |s| s.success()).expect_err("rank 1 failed");
        assert_eq!((rank, status.code()), (1, Some(3)));
        assert!(started.elapsed() < Duration::from_secs(10), "the other ranks were not stopped: {:?}", started.elapsed());
        assert!(ranks.iter_mut().all(|c| matches!(c.try_wait(), Ok(Some(_)))), "a rank is still running");
    }

    #[test]
    fn finished_ranks_give_their_statuses_in_rank_order() {
        let mut ranks = spawn(2, |rank| sh(if rank == 0 { "sleep 0.1; exit 2" } else { "exit 0" })).expect("spawn");
        let statuses = wait(&mut ranks, |s| s.success() || s.code() == Some(2)).expect("both finished");
        assert_eq!(statuses.iter().map(ExitStatus::code).collect::<Vec<_>>(), vec![Some(2), Some(0)]);
    }
}
