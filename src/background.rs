//! Work that must never slow the archive down (full-text indexing) runs
//! on threads at the lowest CPU priority, nice 19: when both cores are
//! busy, pulling from the provider, IMAP and SMTP go first and the index
//! catches up after. On Linux a thread's nice value is its own, and the
//! threads it starts inherit it (the indexer's analysis threads; tantivy's
//! writer and merge threads, when the index is opened from such a thread).

/// The nice value of background threads.
pub const NICE: i32 = 19;

/// Lower the calling thread's CPU priority to [`NICE`].
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::debug!(error = %e, "cannot lower a background thread's priority");
    }
}

/// Run `f` on a thread of its own at the lowest priority; wait for it
/// without blocking the runtime. `Err` if the thread could not start or
/// `f` panicked.
pub async fn run<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_thread();
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a {name} thread: {e}"))?;
    rx.await.map_err(|_| format!("the {name} thread failed (a panic)"))
}

/// [`run`], blocking: for what is set up before the runtime serves.
pub fn run_blocking<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_thread();
            f()
        })
        .map_err(|e| format!("cannot start a {name} thread: {e}"))?
        .join()
        .map_err(|_| format!("the {name} thread failed (a panic)"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[tokio::test]
    async fn background_work_and_the_threads_it_starts_run_at_the_lowest_priority() {
        let before = nice_of_this_thread();
        let (own, child) =
            run("test", || (nice_of_this_thread(), std::thread::spawn(nice_of_this_thread).join().unwrap()))
                .await
                .unwrap();
        assert_eq!((own, child), (NICE, NICE));
        assert_eq!(nice_of_this_thread(), before, "the caller's thread is left as it was");
        assert_eq!(run_blocking("test", nice_of_this_thread).unwrap(), NICE);
        assert!(run("test", || panic!("bug")).await.is_err());
    }
}
