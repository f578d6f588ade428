//! Gives memory back to the operating system after many devices left or came.
//!
//! glibc's allocator keeps freed memory inside its heaps: after thousands of
//! devices leave, their buffers are free but the pages stay with the process
//! (issue 19 measured 2.48 GB kept after 19,000 devices left). Devices that
//! arrive together leave the same kind of holes: each upgrade and hello needs
//! some kilobytes only until the device is admitted. When the number of open
//! connections has fallen well below its recent peak, or has risen well above
//! the count at the last trim and stopped rising, the server asks the allocator
//! to return its free pages (`malloc_trim`). Elsewhere this does nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::hub::Hub;

/// How often the connection count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Fewest connections that must have closed since the peak, or opened since
/// the last trim, before a trim.
const MIN_CHANGE: u64 = 256;

/// Whether falling from `peak` to `now` connections is worth a trim: at least
/// [`MIN_CHANGE`] and at least a quarter of the peak.
fn worth_trimming(peak: u64, now: u64) -> bool {
    let dropped = peak.saturating_sub(now);
    dropped >= MIN_CHANGE && dropped >= peak / 4
}

/// Whether rising from `at_trim` (the count at the last trim) to `now`
/// connections, `now` being no more than a second ago, is worth a trim: the
/// arrivals are over, and they were at least [`MIN_CHANGE`] and a quarter more.
fn worth_trimming_after_arrivals(at_trim: u64, before: u64, now: u64) -> bool {
    let arrived = now.saturating_sub(at_trim);
    now <= before && arrived >= MIN_CHANGE && arrived >= at_trim / 4
}

/// Runs until `stop`: trims the allocator's heaps after a large change in the
/// number of open connections.
pub(crate) async fn give_back(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let (mut peak, mut at_trim, mut before) = (0u64, 0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = hub.metrics.connections.load(Ordering::Relaxed);
        if worth_trimming(peak, now) || worth_trimming_after_arrivals(at_trim, before, now) {
            let released = trim();
            tracing::debug!(
                from = at_trim.max(peak),
                to = now,
                released,
                "gave freed memory back"
            );
            (peak, at_trim) = (now, now);
        } else {
            peak = peak.max(now);
            at_trim = at_trim.min(now);
        }
        before = now;
    }
}

/// Returns the allocator's free pages to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers; it walks the allocator's own heaps
    // under their locks and may be called from any thread at any time.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    released == 1
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_large_fall_is_worth_a_trim() {
        assert!(!worth_trimming(0, 0));
        assert!(!worth_trimming(300, 100), "a fall of 200 is small");
        assert!(worth_trimming(1_000, 700));
        assert!(
            !worth_trimming(10_000, 9_000),
            "a tenth of the peak is churn"
        );
        assert!(worth_trimming(10_000, 0));
        assert!(!worth_trimming(100, 500), "a rise is never one");
    }

    #[test]
    fn arrivals_are_worth_a_trim_once_they_stop() {
        assert!(worth_trimming_after_arrivals(0, 1_000, 1_000));
        assert!(
            !worth_trimming_after_arrivals(0, 900, 1_000),
            "still arriving"
        );
        assert!(!worth_trimming_after_arrivals(0, 200, 200), "too few");
        assert!(
            !worth_trimming_after_arrivals(10_000, 10_300, 10_300),
            "a small share of those there"
        );
        assert!(worth_trimming_after_arrivals(1_000, 10_000, 9_990));
    }
}
