fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    pecgate::cli::main()
}

/// glibc gives each thread that allocates under contention an arena of its
/// own, up to 8 per core, and memory freed in one is rarely handed back:
/// the daemon's threads (async workers, blocking I/O, the full-text
/// indexer and its merges) grew its resident memory by a fifth while a
/// campaign was sent, for no gain in speed (BENCHMARKS.md, campaigns). One
/// arena per core, at least 2 and at most 8, unless `MALLOC_ARENA_MAX` is
/// set, which glibc has already applied.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets a tunable; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores.clamp(2, 8) as libc::c_int);
        }
    }
}
