//! The process's heap, as glibc's allocator sees it: what is in use, what
//! it holds free, and handing free pages back to the system.
//!
//! A daemon that moves hundreds of 275 KB messages a second through
//! malloc leaves free holes between live blocks; glibc returns memory to
//! the system only from the top of each arena, so those holes stay
//! resident. [`spawn_trimmer`] asks glibc every few seconds to release
//! the free pages wherever they are (`malloc_trim`), and the metrics show
//! in-use and free bytes (`pecgate_heap_bytes`). The allocator's calls are
//! the binary's ([`install`]); without them both do nothing.

use std::time::Duration;

/// How often the free pages are handed back, unless
/// `PECGATE_HEAP_TRIM_SECS` says otherwise (0: never).
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The trimmer's period: [`TRIM_EVERY`], or `PECGATE_HEAP_TRIM_SECS`
/// (a value that is not a number of seconds is said, and ignored).
fn trim_every(var: Option<&str>) -> Option<Duration> {
    let Some(v) = var else { return Some(TRIM_EVERY) };
    match v.trim().parse::<u64>() {
        Ok(0) => None,
        Ok(s) => Some(Duration::from_secs(s)),
        Err(_) => {
            tracing::warn!(
                value = v,
                "PECGATE_HEAP_TRIM_SECS is not a number of seconds (0 turns trimming off): trimming every {}s",
                TRIM_EVERY.as_secs()
            );
            Some(TRIM_EVERY)
        }
    }
}

/// What the program's allocator offers (the binary installs glibc's:
/// this library has no `unsafe` code).
pub struct Allocator {
    /// (bytes in use, bytes free but held by the process).
    pub usage: fn() -> (u64, u64),
    /// Hands the free pages back to the system.
    pub trim: fn(),
}

static ALLOCATOR: std::sync::OnceLock<Allocator> = std::sync::OnceLock::new();

/// Called once, at start, by the binary.
pub fn install(a: Allocator) {
    let _ = ALLOCATOR.set(a);
}

/// (bytes in use, bytes free but held), when the allocator tells.
pub fn usage() -> Option<(u64, u64)> {
    ALLOCATOR.get().map(|a| (a.usage)())
}

/// Hands the heap's free pages back to the system.
pub fn trim() {
    if let Some(a) = ALLOCATOR.get() {
        (a.trim)()
    }
}

/// A thread that calls [`trim`] every [`TRIM_EVERY`] for the life of the
/// process (the daemon's).
pub fn spawn_trimmer() {
    let var = std::env::var("PECGATE_HEAP_TRIM_SECS").ok();
    let (Some(_), Some(every)) = (usage(), trim_every(var.as_deref())) else { return };
    let spawned = std::thread::Builder::new().name("heap-trim".into()).spawn(move || loop {
        std::thread::sleep(every);
        trim();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the heap trimmer: free memory stays with the process");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trim_period_is_read_from_the_environment() {
        assert_eq!(trim_every(None), Some(TRIM_EVERY));
        assert_eq!(trim_every(Some("0")), None, "0 turns it off");
        assert_eq!(trim_every(Some(" 30 ")), Some(Duration::from_secs(30)));
        assert_eq!(trim_every(Some("5s")), Some(TRIM_EVERY), "not a number: the default, with a warning");
    }
}
