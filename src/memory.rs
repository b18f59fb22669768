//! How the gateway keeps its resident memory small on glibc: fewer malloc
//! arenas, large buffers (a batch of lines, its gzip) in their own mappings
//! that go back to the kernel when freed, and free memory handed back after
//! start-up (the configuration of a large campus is parsed once and dropped)
//! and then every half minute (a burst leaves freed holes that glibc would
//! otherwise keep). No-ops on other C libraries.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Tunes glibc's malloc. Call before any thread is started.
///
/// - Two arenas: with the default (eight per core) each runtime and blocking
///   thread may get its own arena and keep its high-water mark.
/// - A fixed mmap threshold of 256 KiB: by default glibc raises it up to
///   32 MiB after the first large buffers are freed, and from then on puts
///   every batch buffer in the heap, where it stays after use.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; these parameters are valid on glibc.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
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

/// Calls [`release`] now and then every 30 seconds until `cancel`.
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
