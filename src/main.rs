fn main() -> std::process::ExitCode {
    tune_malloc();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pecgate::heap::install(pecgate::heap::Allocator { usage: glibc_usage, trim: glibc_trim });
    pecgate::cli::main()
}

/// glibc's allocator, set for a long-running daemon whose memory should
/// stay bounded (BENCHMARKS.md, "Campaigns": resident memory while a
/// 48,397-notice campaign was sent):
///
/// * glibc gives each thread that allocates under contention an arena of
///   its own, up to 8 per core, and memory freed in one is rarely handed
///   back: the daemon's threads (async workers, blocking I/O, the
///   full-text indexer and its merges) grew resident memory by a fifth,
///   for no gain in speed. One arena per core, at least 2 and at most 8.
/// * Blocks of 4 MiB and more are mapped and unmapped on their own, and
///   the threshold stays there. By default it rises to the largest block
///   freed: after one argon2 password check (19 MiB) even FETCH windows
///   and index pages came from the arenas and stayed there. At 256 KiB
///   every 275 KB notice was a fresh mapping: fewer MiB resident, but
///   a fifth more CPU per notice sent.
///
/// `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the environment win
/// (glibc has already applied them).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str, param: libc::c_int, value: usize| {
            if std::env::var_os(name).is_none() {
                // SAFETY: mallopt only sets a tunable; called before any thread exists.
                unsafe {
                    libc::mallopt(param, value as libc::c_int);
                }
            }
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        set("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, cores.clamp(2, 8));
        set("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// In use (arena blocks and mapped ones) and free but held, from glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_usage() -> (u64, u64) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) as u64, m.fordblks as u64)
}

/// glibc returns memory only from the top of an arena on its own;
/// malloc_trim releases the free pages wherever they are.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_trim() {
    // SAFETY: malloc_trim is thread-safe; 0: no pad kept at the top.
    unsafe {
        libc::malloc_trim(0);
    }
}
