//! Supervision of the tasks the daemon cannot run without (reader, leases, ownership, dead letters): each one's
//! end, a return or a panic, is reported to the daemon, which turns unready and exits non-zero.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::RunError;

/// How a supervised task ended: which task, and the error the daemon exits with.
pub(super) struct TaskEnd {
    task: &'static str,
    error: Option<RunError>,
    panic: Option<String>,
}

impl TaskEnd {
    pub(super) fn into_error(self) -> RunError {
        match (self.error, self.panic) {
            (Some(e), _) => e,
            (None, Some(p)) => RunError::Failed(format!("the {} task panicked: {p}", self.task)),
            (None, None) => RunError::Failed(format!("the {} task ended", self.task)),
        }
    }
}

/// Aborts the watched task when its watcher is aborted or dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches `inner`, a task that should run until shutdown: its end (a return, judged by `verdict`, or a panic)
/// is reported on `ends`. Aborting the returned handle aborts `inner` and reports nothing.
pub(super) fn supervise<T: Send + 'static>(
    task: &'static str,
    inner: JoinHandle<T>,
    ends: &mpsc::UnboundedSender<TaskEnd>,
    verdict: impl FnOnce(T) -> Option<RunError> + Send + 'static,
) -> JoinHandle<()> {
    let ends = ends.clone();
    // Owned by the future from the start: a watcher aborted before its first poll still aborts `inner`.
    let guard = AbortOnDrop(inner.abort_handle());
    tokio::spawn(async move {
        let _guard = guard;
        let end = match inner.await {
            Ok(v) => TaskEnd { task, error: verdict(v), panic: None },
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                TaskEnd { task, error: None, panic: Some(msg) }
            }
            Err(_) => return, // cancelled: shutdown
        };
        let _ = ends.send(end);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_supervised_task_that_panics_or_returns_is_reported_and_an_aborted_one_is_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _p = supervise("panicky", tokio::spawn(async { panic!("boom") }), &tx, |()| None);
        let end = rx.recv().await.unwrap().into_error().to_string();
        assert_eq!(end, "the panicky task panicked: boom");
        let _r = supervise("quitter", tokio::spawn(async {}), &tx, |()| None);
        assert_eq!(rx.recv().await.unwrap().into_error().to_string(), "the quitter task ended");
        let _e = supervise("failing", tokio::spawn(async { 7 }), &tx, |v| Some(RunError::Failed(format!("code {v}"))));
        assert_eq!(rx.recv().await.unwrap().into_error().to_string(), "code 7");
        // Aborting the watcher aborts the task (shutdown), and nothing is reported.
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let w = supervise(
            "forever",
            tokio::spawn(async move {
                let _keep = dropped_tx;
                std::future::pending::<()>().await
            }),
            &tx,
            |()| None,
        );
        w.abort();
        assert!(dropped_rx.await.is_err(), "the watched task was aborted");
        drop(tx);
        assert!(rx.recv().await.is_none());
    }
}
