//! What a plugin may touch: nothing, except the read-only folders its config grants,
//! within a memory cap and a wall-clock limit per call.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::error::LoadError;

/// Guest stderr kept for error messages (the tail of a panic message).
const STDERR_CAP: usize = 16 * 1024;

/// A host folder a plugin may read, and where the plugin sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The folder on the host.
    pub host: PathBuf,
    /// The path the guest opens it by, e.g. `/vocab`.
    pub guest: String,
}

/// The limits and grants of one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// The most linear memory the plugin may have, in bytes.
    pub memory_cap: usize,
    /// The wall-clock limit of one call.
    pub timeout: Duration,
    /// Read-only folders the plugin may read.
    pub grants: Vec<Grant>,
    /// Settings passed to `configure`.
    pub settings: Vec<(String, String)>,
    /// Keep a configured spare instance, made ahead on a thread of its own, so that after a
    /// failure the plugin runs again at once (at the cost of a second instance's memory).
    pub spare: bool,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self { memory_cap: 512 << 20, timeout: Duration::from_secs(10), grants: Vec::new(), settings: Vec::new(), spare: true }
    }
}

/// Refuses memory growth past the cap, and remembers that it did.
pub(crate) struct Limiter {
    cap: usize,
    /// The size the guest asked for when it was refused.
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The data of one plugin instance's `Store`.
pub(crate) struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) stderr: MemoryOutputPipe,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Clocks that never move: plugins get no time source, so their output cannot depend on it.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl Ctx {
    /// A deny-all WASI context plus the granted read-only folders.
    pub(crate) fn new(sandbox: &Sandbox, origin: &str) -> Result<Self, LoadError> {
        let stderr = MemoryOutputPipe::new(STDERR_CAP);
        let mut b = WasiCtxBuilder::new();
        b.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .insecure_random_seed(0);
        for g in &sandbox.grants {
            b.preopened_dir(&g.host, &g.guest, FsPerms::ReadOnly).map_err(|e| LoadError::Grant {
                origin: origin.to_owned(),
                host: g.host.clone(),
                guest: g.guest.clone(),
                reason: format!("{e:#}"),
            })?;
        }
        Ok(Self { wasi: b.build(), table: ResourceTable::new(), limiter: Limiter { cap: sandbox.memory_cap, refused: None }, stderr })
    }

    /// The guest's stderr so far, as text (for error messages).
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_owned()
    }
}
