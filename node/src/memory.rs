//! The process's memory settings: applied by `trellis-node` at start, and by
//! `trellis-bench`, so that its figures are the product's.

/// Turns transparent huge pages off for this process (Linux; elsewhere it does nothing).
///
/// The allocator (mimalloc) asks the kernel for huge pages on its arenas. A commit of a
/// large batch allocates buffers of a few hundred KiB and frees them at its end, and
/// the arena pages that serve the next batch are often ones not touched before: each
/// first touch faulted in a 2 MiB huge page and zeroed all of it. Sampled with perf,
/// that zeroing was about a sixth of the committing thread's time in
/// `trellis-bench store`'s batches of 1,000 inserts; with 4 KiB pages only what is
/// written is zeroed. On a Raspberry Pi it also keeps a mostly empty huge page from
/// holding 2 MiB of its memory.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "transparent huge pages stay on");
    }
}
