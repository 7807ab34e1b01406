//! The load generators' runtime, shared by both binaries of this crate.
//!
//! A load generator shares the cores with the server it measures. By default it runs one
//! worker thread per core, so that whichever core is free can read the answers waiting for it.
//! On one thread it becomes part of what is measured: on two cores, while two server workers
//! hold both, it waits for a core with answers to read, and then the server runs out of
//! requests and a core idles. That costs a target the more CPU the server spends on a request.

/// A runtime of `threads` worker threads; 1 (or 0) means a current-thread runtime.
pub fn build(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// The worker threads asked for, or one per core; at least 1.
pub fn threads(asked: Option<usize>) -> usize {
    asked
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_core_unless_told() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads(None), cores);
        assert_eq!(threads(Some(1)), 1);
        assert_eq!(threads(Some(3)), 3);
        assert_eq!(threads(Some(0)), 1);
    }
}
