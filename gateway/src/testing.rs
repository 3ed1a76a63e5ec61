//! [feature `testing`] What the tests of the `meshgate` binary and the black-box tests share:
//! waiting for a condition by polling it (tests never sleep to synchronise).

use std::time::Duration;

/// How long a condition that should hold soon is given, in the common case.
pub const SOON: Duration = Duration::from_secs(5);

/// How often [`eventually`] polls.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` every 10 ms until it is true, for at most `limit`; returns whether it became
/// true. The clock is tokio's, so under paused time the polls advance it.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_is_true_once_the_check_is_and_false_after_the_limit() {
        let mut calls = 0;
        let found = eventually(SOON, || {
            calls += 1;
            let now = calls;
            async move { now == 3 }
        })
        .await;
        assert!(found);
        assert_eq!(calls, 3);
        let start = tokio::time::Instant::now();
        assert!(!eventually(Duration::from_secs(1), || async { false }).await);
        assert!(start.elapsed() >= Duration::from_secs(1));
    }
}
