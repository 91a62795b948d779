//! Work that must never slow the archive down (full-text indexing) runs
//! on threads of the kernel's idle class (`SCHED_IDLE`, and nice 19 where
//! that class is refused): when both cores are busy, pulling from the
//! provider, IMAP and SMTP go first and the index catches up after. A
//! thread woken by a client's command (and the client's own, on the same
//! machine) takes the core from such a thread at once, where at nice 19 it
//! may wait out the running thread's time slice: the first SELECT of a
//! million-message folder after a start, timed by a client while the index
//! caught up with that million, took a median 0.4 ms in the idle class, as
//! with no indexer at all, against 0.5 and 0.6 ms at nice 19
//! (BENCHMARKS.md, "The cold SELECT's fixed work cut"). On Linux a
//! thread's scheduling class and nice value are its own, and the threads
//! it starts inherit them (the indexer's analysis threads; tantivy's
//! writer and merge threads, when the index is opened from such a thread).
//!
//! A thread of the idle class still runs a little on a saturated machine
//! (its weight is a fifth of nice 19's): the index falls behind under
//! sustained load and catches up after, as it did at nice 19.
//!
//! Work a session may be waiting for (a large folder's list read after its
//! SELECT) is only lowered to nice 19: in the idle class, a busy machine
//! could keep that session waiting indefinitely.

/// The nice value of background threads.
pub const NICE: i32 = 19;

/// Lower the calling thread's CPU priority to [`NICE`]: for work a session
/// may end up waiting for.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::debug!(error = %e, "cannot lower a background thread's priority");
    }
}

/// Put the calling thread in the idle scheduling class (and at [`NICE`]):
/// for work nobody waits for. It runs only on a core nothing else wants.
pub fn idle_this_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            idle,
        ) {
            tracing::debug!(error = ?e, "cannot put a background thread in the idle class");
        }
    }
    // After the class: setting it also sets the nice value (to 0).
    lower_this_thread();
}

/// Whether the calling thread is in the idle scheduling class.
#[cfg(target_os = "linux")]
pub fn this_thread_is_idle() -> bool {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    thread_priority::thread_schedule_policy()
        .is_ok_and(|p| p == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))
}

/// Run `f` on a thread of its own at the lowest priority; wait for it
/// without blocking the runtime. `Err` if the thread could not start or
/// `f` panicked.
pub async fn run<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            idle_this_thread();
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
            idle_this_thread();
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
        let before = (nice_of_this_thread(), this_thread_is_idle());
        let lowest = || (nice_of_this_thread(), this_thread_is_idle());
        let (own, child) = run("test", move || (lowest(), std::thread::spawn(lowest).join().unwrap())).await.unwrap();
        assert_eq!((own, child), ((NICE, true), (NICE, true)));
        assert_eq!((nice_of_this_thread(), this_thread_is_idle()), before, "the caller's thread is left as it was");
        assert_eq!(run_blocking("test", lowest).unwrap(), (NICE, true));
        // Work a session may wait for: nice 19, not the idle class.
        let lowered = std::thread::spawn(move || {
            lower_this_thread();
            lowest()
        });
        assert_eq!(lowered.join().unwrap(), (NICE, false));
        assert!(run("test", || panic!("bug")).await.is_err());
    }
}
