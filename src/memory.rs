//! How the gateway keeps its resident memory small on glibc: fewer malloc
//! arenas, and free memory handed back to the kernel after start-up (the
//! configuration of a large campus is parsed once and dropped) and then
//! every half minute (a replayed backlog or a burst leaves freed holes that
//! glibc would otherwise keep). No-ops on other C libraries.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Limits glibc to two malloc arenas. Call before any thread is started:
/// with the default (eight per core), each runtime and blocking thread may
/// get its own arena and keep its high-water mark.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; M_ARENA_MAX is valid on glibc.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the kernel.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release`] every 30 seconds until `cancel`.
pub async fn release_periodically(cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        // It walks the heap: a millisecond or so, kept off the runtime.
        let _ = tokio::task::spawn_blocking(release).await;
    }
}
