//! The life of one Destination stream, the same for `Get` (a balancer) and `GetProfile` (a
//! service): opened by the first request, closed after `idle_timeout` without one, opened again
//! with backoff when it fails (the backoff restarts once a stream answered). What the last
//! stream said keeps serving until the next one's first message replaces it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Destination;
use crate::target::Target;

/// What a stream feeds.
pub(in crate::upstream) trait Watched: Send + Sync + Sized + 'static {
    /// The stream's messages.
    type Message: Send + 'static;
    /// What one stream remembers between its messages.
    type Seen: Default + Send;
    /// `Get` or `GetProfile`.
    const METHOD: &'static str;

    /// The target looked up.
    fn target(&self) -> &Target;
    /// Its use and stream bookkeeping.
    fn usage(&self) -> &Usage;
    /// Opens a stream.
    fn open(
        &self,
        destination: &Destination,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Message>, tonic::Status>> + Send;
    /// Takes in one message (`seen` is empty for a new stream's first).
    fn apply(&self, destination: &Destination, seen: &mut Self::Seen, message: Self::Message);
    /// A stream could not be opened, or failed before its first message.
    fn refused(&self, status: &tonic::Status);
}

/// When something was last used, and whether its stream runs.
pub(in crate::upstream) struct Usage {
    watching: AtomicBool,
    used_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            watching: AtomicBool::new(false),
            used_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Usage {
    /// Records a use now.
    pub(in crate::upstream) fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.used_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let used = Duration::from_millis(self.used_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(used)
    }
}

/// Records a use of `watched` and starts its stream unless one runs.
pub(in crate::upstream) fn ensure<W: Watched>(destination: &Arc<Destination>, watched: &Arc<W>) {
    let usage = watched.usage();
    usage.touch();
    if !usage.watching.swap(true, Ordering::AcqRel) {
        tokio::spawn(run(destination.clone(), Arc::downgrade(watched)));
    }
}

/// How a stream ended.
enum Ended {
    /// Unused for the idle timeout (or gone): stop.
    Idle,
    /// Failed or closed after answering: open another after the first backoff.
    Broken,
    /// Not opened, or failed before its first message: open another after a longer backoff.
    Refused(tonic::Status),
}

async fn run<W: Watched>(destination: Arc<Destination>, watched: Weak<W>) {
    let mut attempt = 0;
    loop {
        let Some(strong) = watched.upgrade() else {
            return;
        };
        let opened = strong.open(&destination).await;
        drop(strong);
        let ended = match opened {
            Ok(stream) => follow(&destination, &watched, stream).await,
            Err(status) => Ended::Refused(status),
        };
        match ended {
            Ended::Idle => return,
            Ended::Broken => attempt = 0,
            Ended::Refused(status) => {
                let Some(w) = watched.upgrade() else {
                    return;
                };
                // Logged once per run of failures (the counters have every one).
                let (target, code, message) = (w.target(), status.code(), status.message());
                if attempt == 0 {
                    tracing::warn!(%target, method = W::METHOD, ?code, message, "destination lookup failed; retrying with backoff");
                } else {
                    tracing::debug!(%target, method = W::METHOD, ?code, message, attempt, "destination lookup failed again");
                }
                w.refused(&status);
                attempt += 1;
            }
        }
        tokio::time::sleep(destination.backoff(attempt)).await;
        match watched.upgrade() {
            Some(w) if !stop_if_idle(&destination, &*w) => {}
            _ => return,
        }
    }
}

/// Whether `watched` went unused for the idle timeout; then its stream stops (what it said
/// stays, and the next request opens a new stream).
fn stop_if_idle<W: Watched>(destination: &Destination, watched: &W) -> bool {
    let usage = watched.usage();
    if usage.idle_for() < destination.options.idle_timeout {
        return false;
    }
    tracing::debug!(target = %watched.target(), method = W::METHOD, "destination stream closed: idle");
    usage.watching.store(false, Ordering::Release);
    true
}

async fn follow<W: Watched>(
    destination: &Destination,
    watched: &Weak<W>,
    mut stream: tonic::Streaming<W::Message>,
) -> Ended {
    // One clock for the whole stream: a busy stream (endpoints churning) must not postpone the
    // idle check.
    let mut check = tokio::time::interval(
        (destination.options.idle_timeout / 2).max(Duration::from_millis(10)),
    );
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.reset();
    let mut seen = W::Seen::default();
    let mut answered = false;
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = check.tick() => match watched.upgrade() {
                Some(w) if !stop_if_idle(destination, &*w) => continue,
                _ => {
                    destination.ended(W::METHOD, tonic::Status::cancelled("idle"));
                    return Ended::Idle;
                }
            },
        };
        let Some(watched) = watched.upgrade() else {
            return Ended::Idle;
        };
        let target = watched.target();
        match message {
            Ok(Some(message)) => {
                answered = true;
                watched.apply(destination, &mut seen, message);
            }
            Ok(None) => {
                let status = destination.ended(W::METHOD, tonic::Status::ok("closed"));
                if !answered {
                    return Ended::Refused(status);
                }
                tracing::info!(%target, method = W::METHOD, "destination stream closed by the controller");
                return Ended::Broken;
            }
            Err(status) => {
                let status = destination.ended(W::METHOD, status);
                if !answered {
                    return Ended::Refused(status);
                }
                tracing::warn!(%target, method = W::METHOD, code = ?status.code(), message = status.message(), "destination stream failed; keeping its last answer");
                return Ended::Broken;
            }
        }
    }
}

/// Waits up to `wait` for `answer` to give something (`Err(last failure)` while it has not),
/// woken by `changed`; `Err` with the last failure when nothing came in time. The common case,
/// an answer already there, takes no wait registration.
pub(in crate::upstream) async fn first_answer<T>(
    changed: &Notify,
    wait: Duration,
    mut answer: impl FnMut() -> Result<T, Option<String>>,
) -> Result<T, Option<String>> {
    if let Ok(answered) = answer() {
        return Ok(answered);
    }
    let deadline = Instant::now() + wait;
    loop {
        let woken = changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let last = match answer() {
            Ok(answered) => return Ok(answered),
            Err(last) => last,
        };
        if tokio::time::timeout_at(deadline, woken).await.is_err() {
            return Err(last);
        }
    }
}

/// Whether a refusal is about the name itself (404 `bad gateway domain`, as Linkerd's gateway).
pub(super) fn rejects_name(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_first_answer_wakes_waiters_and_none_in_time_gives_the_last_failure() {
        let changed = Arc::new(Notify::new());
        let state: Arc<Mutex<Result<u32, Option<String>>>> = Arc::new(Mutex::new(Err(None)));
        let read = |state: &Arc<Mutex<Result<u32, Option<String>>>>| {
            let state = state.clone();
            move || state.lock().unwrap().clone()
        };
        // Nothing comes: the wait ends at the deadline with the last failure.
        *state.lock().unwrap() = Err(Some("connection refused".to_owned()));
        let start = Instant::now();
        let answer = first_answer(&changed, Duration::from_secs(3), read(&state)).await;
        assert_eq!(answer, Err(Some("connection refused".to_owned())));
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        // An answer set while waiting wakes the waiter at once.
        let waiter = {
            let (changed, read) = (changed.clone(), read(&state));
            tokio::spawn(async move { first_answer(&changed, Duration::from_secs(3), read).await })
        };
        tokio::task::yield_now().await;
        *state.lock().unwrap() = Ok(7);
        changed.notify_waiters();
        let start = Instant::now();
        assert_eq!(waiter.await.unwrap(), Ok(7));
        assert!(start.elapsed() < Duration::from_secs(1));
        // And once there is one, it is returned without waiting.
        assert_eq!(
            first_answer(&changed, Duration::ZERO, read(&state)).await,
            Ok(7)
        );
    }
}
