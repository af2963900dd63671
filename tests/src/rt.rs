//! The few runtime services the conformance suite needs, one module per runtime, with the
//! same functions.

/// tokio.
pub mod tokio {
    use std::future::Future;
    use std::time::Duration;

    /// `Some(output)`, or `None` when `future` takes longer than `limit`.
    pub async fn timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
        ::tokio::time::timeout(limit, future).await.ok()
    }

    /// Runs `f` on a blocking thread (for the synchronous harness calls).
    pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        ::tokio::task::spawn_blocking(f)
            .await
            .expect("blocking task panicked")
    }

    /// Lets time pass (only where the passing of time is what a test is about).
    pub async fn sleep(duration: Duration) {
        ::tokio::time::sleep(duration).await
    }

    /// Runs `future` as its own task (possibly on another thread) and waits for its output.
    pub async fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
        ::tokio::spawn(future).await.expect("spawned task panicked")
    }

    /// Starts `future` as its own task now; the returned future waits for its output.
    pub fn spawn_handle<T: Send + 'static>(
        future: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = T> {
        let handle = ::tokio::spawn(future);
        async move { handle.await.expect("spawned task panicked") }
    }
}

/// async-std.
pub mod async_std {
    use std::future::Future;
    use std::time::Duration;

    /// `Some(output)`, or `None` when `future` takes longer than `limit`.
    pub async fn timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
        ::async_std::future::timeout(limit, future).await.ok()
    }

    /// Runs `f` on a blocking thread (for the synchronous harness calls).
    pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        ::async_std::task::spawn_blocking(f).await
    }

    /// Lets time pass (only where the passing of time is what a test is about).
    pub async fn sleep(duration: Duration) {
        ::async_std::task::sleep(duration).await
    }

    /// Runs `future` as its own task (possibly on another thread) and waits for its output.
    pub async fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
        ::async_std::task::spawn(future).await
    }

    /// Starts `future` as its own task now; the returned future waits for its output.
    pub fn spawn_handle<T: Send + 'static>(
        future: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = T> {
        ::async_std::task::spawn(future)
    }
}
