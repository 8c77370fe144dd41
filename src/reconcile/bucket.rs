//! Per-target token bucket with AIMD: throttling responses halve the rate, successes win it back slowly.
//! Hand-written because governor's quotas are fixed at construction and AIMD needs a rate that moves.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    max_rate: f64,
    min_rate: f64,
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, now: Instant) -> Self {
        let burst = rate.max(1.0);
        TokenBucket { max_rate: rate, min_rate: (rate / 64.0).min(0.1), rate, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Takes a token; returns how long the caller must wait before using it. Callers queue up:
    /// tokens may go negative, each later reservation waits longer.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Multiplicative decrease, and no burst until the cloud has recovered.
    pub fn on_throttle(&mut self, now: Instant) {
        self.refill(now);
        self.rate = (self.rate / 2.0).max(self.min_rate);
        self.tokens = self.tokens.min(0.0);
    }

    /// Additive increase: 1% of the configured rate per successful call, up to it (slow enough that a
    /// cloud whose quota is below our setting throttles us rarely, fast enough to recover in ~100 calls).
    pub fn on_success(&mut self, now: Instant) {
        if self.rate < self.max_rate {
            self.refill(now);
            self.rate = (self.rate + self.max_rate * 0.01).min(self.max_rate);
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// An async handle on a bucket.
#[derive(Debug)]
pub struct Limiter(Mutex<TokenBucket>);

impl Limiter {
    pub fn new(rate: f64) -> Self {
        Limiter(Mutex::new(TokenBucket::new(rate, Instant::now())))
    }

    pub async fn acquire(&self) {
        let wait = self.0.lock().await.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    pub async fn throttled(&self) -> f64 {
        let mut b = self.0.lock().await;
        b.on_throttle(Instant::now());
        b.rate()
    }

    pub async fn succeeded(&self) -> f64 {
        let mut b = self.0.lock().await;
        b.on_success(Instant::now());
        b.rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate() {
        let l = Limiter::new(5.0);
        let start = Instant::now();
        for _ in 0..25 {
            l.acquire().await;
        }
        // 5 from the burst, then 20 at 5/s.
        let took = start.elapsed().as_secs_f64();
        assert!((3.9..=4.1).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn aimd() {
        let now = Instant::now();
        let mut b = TokenBucket::new(8.0, now);
        b.on_throttle(now);
        assert_eq!(b.rate(), 4.0);
        b.on_throttle(now);
        assert_eq!(b.rate(), 2.0);
        // No burst right after a throttle: the next call waits a full interval.
        assert!(b.reserve(now) >= Duration::from_millis(499));
        for _ in 0..100 {
            b.on_success(now);
        }
        assert_eq!(b.rate(), 8.0);
        for _ in 0..100 {
            b.on_throttle(now);
        }
        assert!(b.rate() >= 0.1 - 1e-9);
    }
}
