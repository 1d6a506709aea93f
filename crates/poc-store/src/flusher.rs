//! A background thread that flushes on a timer and once more when stopped.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs a flush callback every `interval` on its own thread. Stopping (or dropping) it
/// wakes the thread at once, runs the callback a last time and joins the thread, so
/// everything appended before the stop is durable when `stop` returns.
#[derive(Debug)]
pub struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the timer. The callback owns its error handling (e.g. logging).
    pub fn start(interval: Duration, mut flush: impl FnMut() + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("poc-store-flusher".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => flush(),
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            flush();
                            return;
                        }
                    }
                }
            })
            .expect("spawn flusher thread");
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the timer after a final flush.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn flushes_periodically_and_once_more_on_stop() {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        let f = Flusher::start(Duration::from_millis(10), move || {
            m.fetch_add(1, Ordering::SeqCst);
        });
        while n.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = n.load(Ordering::SeqCst);
        f.stop();
        assert!(n.load(Ordering::SeqCst) > before);
    }

    #[test]
    fn stop_does_not_wait_for_the_interval() {
        let f = Flusher::start(Duration::from_secs(3600), || {});
        let t = std::time::Instant::now();
        drop(f);
        assert!(t.elapsed() < Duration::from_secs(60));
    }
}
