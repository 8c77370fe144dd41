//! Rate-limits a consumer's error log lines (not its work): librdkafka reports one error per failed
//! connection attempt while a broker is down, and the consumers must keep polling through them.

use std::time::{Duration, Instant};

pub struct ErrorLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    pub fn new(every: Duration) -> Self {
        ErrorLog { every, last: None, suppressed: 0 }
    }

    /// Some(errors suppressed since the last admitted one) if this one may be logged.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_log_is_rate_limited_and_counts_what_it_suppressed() {
        let mut l = ErrorLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit(t0), Some(0));
        for i in 1..=99 {
            assert_eq!(l.admit(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(l.admit(t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(l.admit(t0 + Duration::from_secs(11)), None);
    }
}
