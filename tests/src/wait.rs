//! Bounded waiting: every await of a test goes through [`within`], and every "until the
//! fleet has caught up" goes through [`wait_until`] / [`wait_for`]. There are no bare
//! sleeps: a condition is polled every [`POLL_INTERVAL`] until it holds or its deadline
//! passes, and each poll is itself bounded, so a hung call cannot hang the test.

use std::fmt::Display;
use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::time::Instant;

/// Bound on any single await in a test: a call, a connect, a publish, a process start.
pub const STEP: Duration = Duration::from_secs(10);

/// How often [`wait_until`] and friends poll their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Awaits `fut` for at most [`STEP`]; on timeout the error names `what`.
pub async fn within<F: IntoFuture>(what: impl Display, fut: F) -> anyhow::Result<F::Output> {
    within_for(STEP, what, fut).await
}

/// Awaits `fut` for at most `limit`; on timeout the error names `what`.
pub async fn within_for<F: IntoFuture>(
    limit: Duration,
    what: impl Display,
    fut: F,
) -> anyhow::Result<F::Output> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?}: {what}"))
}

/// Polls `condition` until it returns `true`, for at most `timeout`.
///
/// On timeout the error names `what`. Use [`wait_for`] when the error should also say
/// how far things got (much easier to diagnose than "timed out").
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: impl Display,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = condition();
        async move { if fut.await { Ok(()) } else { Err("not yet") } }
    })
    .await
}

/// Polls `attempt` until it returns `Ok`, for at most `timeout`, and returns its value.
///
/// `Err` means "not yet" and describes the state seen (`"sequence 12 of 500"`); on
/// timeout the error names `what` and quotes the last such description.
pub async fn wait_for<T, E, F, Fut>(
    timeout: Duration,
    what: impl Display,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Each attempt is bounded too: a hung call must not outlive the deadline.
        let last = match tokio::time::timeout(remaining.max(POLL_INTERVAL), attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(state)) => state.to_string(),
            Err(_) => "the last attempt itself did not finish in time".to_owned(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep_until((Instant::now() + POLL_INTERVAL).min(deadline)).await;
    }
}

/// Checks that `condition` keeps holding for the whole of `window` (polled every
/// [`POLL_INTERVAL`]): for "stays not ready", "is never applied".
///
/// `Err` from the condition is a violation: the error names `what` and quotes it.
pub async fn holds_for<E, F, Fut>(
    window: Duration,
    what: impl Display,
    mut condition: F,
) -> anyhow::Result<()>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let deadline = Instant::now() + window;
    loop {
        match tokio::time::timeout(STEP, condition()).await {
            Ok(Ok(())) => {}
            Ok(Err(violation)) => anyhow::bail!("{what} stopped holding: {violation}"),
            Err(_) => anyhow::bail!("{what}: a check did not finish within {STEP:?}"),
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep_until((Instant::now() + POLL_INTERVAL).min(deadline)).await;
    }
}
