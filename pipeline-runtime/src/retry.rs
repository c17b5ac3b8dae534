//! Whether a failure can be retried, and the backoff between attempts. Pure, except
//! [`retry`] and [`wait_for`], which sleep between attempts.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::Error;

impl Error {
    /// Whether repeating the failed operation can succeed (timeouts, throttling, 5xx,
    /// broken connections) as opposed to needing a change (bad input, config, auth).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. }
            | Error::Kafka { retryable, .. }
            | Error::Search { retryable, .. } => *retryable,
            Error::Read { .. } => true,
            _ => false,
        }
    }
}

/// Exponential backoff: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or `attempts` attempts
/// were made; sleeps with [`Backoff::default`] between attempts.
pub async fn retry<T, F, Fut>(what: &str, attempts: u32, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::default();
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_retryable() && attempt < attempts => {
                let delay = backoff.next_delay();
                tracing::warn!(what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `op` until it succeeds, retrying retryable errors without a limit, and returns at
/// once on an error that needs a change (auth, configuration) or when `stop` is set.
///
/// For the services a role needs before it can start (the bucket, the brokers, the index):
/// in a cluster they may come up minutes after the role's pod, and a pod that waits says
/// what it waits for in its log instead of crash-looping into ever longer restart delays.
pub async fn wait_for<T, F, Fut>(what: &str, stop: &AtomicBool, op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    wait_until(what, stop, None, op).await
}

/// [`wait_for`], giving up with the last error once `deadline` (if any) has passed.
///
/// For waits that must end before an outside limit does: a partition's state is loaded
/// inside the rebalance callback, and a member that does not poll for
/// `max.poll.interval.ms` is put out of the group.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    stop: &AtomicBool,
    deadline: Option<tokio::time::Instant>,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut attempt: u64 = 1;
    loop {
        match op().await {
            Ok(value) => {
                if attempt > 1 {
                    tracing::info!(what, attempts = attempt, "available");
                }
                return Ok(value);
            }
            Err(e) if e.is_retryable() => {
                if stop.load(Ordering::SeqCst) {
                    return Err(Error::StoppedWaiting {
                        what: what.to_string(),
                        last_error: e.to_string(),
                    });
                }
                let delay = backoff.next_delay();
                if deadline.is_some_and(|d| tokio::time::Instant::now() + delay > d) {
                    tracing::error!(what, attempts = attempt, error = %e, "gave up waiting");
                    return Err(e);
                }
                tracing::warn!(what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "waiting");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    fn store_error(retryable: bool) -> Error {
        Error::Store {
            op: "put",
            key: "k".into(),
            retryable,
            message: "m".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_permanent_errors_and_after_the_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<(), Error> = retry("t", 5, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(store_error(false)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let r: Result<(), Error> = retry("t", 3, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(store_error(true)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let r = retry("t", 3, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(store_error(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_outlasts_any_number_of_retryable_errors_but_not_a_permanent_one() {
        let never = AtomicBool::new(false);
        let calls = AtomicU32::new(0);
        let r = wait_for("t", &never, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 40 {
                    Err(store_error(true))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 40);

        let calls = AtomicU32::new(0);
        let r: Result<(), Error> = wait_for("t", &never, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(store_error(false)) }
        })
        .await;
        assert!(matches!(
            r,
            Err(Error::Store {
                retryable: false,
                ..
            })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_gives_up_when_asked_to_stop() {
        let stop = AtomicBool::new(false);
        let calls = AtomicU32::new(0);
        let r: Result<(), Error> = wait_for("the bucket", &stop, || {
            if calls.fetch_add(1, Ordering::SeqCst) == 2 {
                stop.store(true, Ordering::SeqCst);
            }
            async { Err(store_error(true)) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let message = r.unwrap_err().to_string();
        assert!(
            message.starts_with("stopped while waiting for the bucket: object store: put k"),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_gives_up_with_the_last_error_before_the_deadline() {
        let never = AtomicBool::new(false);
        let calls = AtomicU32::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let r: Result<(), Error> = wait_until("t", &never, Some(deadline), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(store_error(true)) }
        })
        .await;
        // Sleeps of 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s after the first five attempts; the
        // next (5 s) would end past the deadline.
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert!(matches!(
            r,
            Err(Error::Store {
                retryable: true,
                ..
            })
        ));
        assert!(tokio::time::Instant::now() <= deadline);
    }
}
