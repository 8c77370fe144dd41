//! Per-target token bucket whose rate learns the cloud's quota. Hand-written because governor's quotas are
//! fixed at construction and the rate here moves.
//!
//! The clouds do not publish a target's real quota (it differs per account, region and contract), so the
//! configured rate is a ceiling and the cloud's throttling is the signal, as packet loss is for TCP:
//! - a throttle learns a ceiling (TCP's ssthresh) just above what the cloud accepted in the last second (the
//!   rate sent at when nothing was accepted) and backs off to 70% of the rate, or lower, to that accepted rate;
//!   further throttles within 300 ms come from calls already sent at the old rate and are not counted again
//!   (one decrease per episode);
//! - successes climb back fast to 95% of the ceiling, then probe above it slowly, so a steady quota is held
//!   at ≥ 90% with a throttle only every few hundred calls;
//! - after `FORGET` without a throttle the ceiling is forgotten and the rate climbs back to the configured
//!   one (the quota may have been raised);
//! - the burst is one second at the current rate, so it follows what the cloud takes; after a throttle
//!   nothing is saved up, and nothing at start (the configured rate is only a guess until the cloud answers).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Throttles within this long of a decrease belong to the same episode.
const EPISODE: Duration = Duration::from_millis(300);
/// A ceiling not confirmed by a throttle for this long is forgotten.
const FORGET: Duration = Duration::from_secs(60);
/// The rate after a throttle, as a share of the rate it happened at.
const BACKOFF: f64 = 0.7;
/// Above the cruise rate, the climb per success as a share of the ceiling: 200 successes from the cruise
/// rate to the ceiling, so a steady quota costs about one throttle in a few hundred calls.
const PROBE: f64 = 0.0005;
/// Below this share of the ceiling the rate climbs fast.
const CRUISE: f64 = 0.95;

#[derive(Debug)]
pub struct TokenBucket {
    max_rate: f64,
    min_rate: f64,
    rate: f64,
    /// The rate the last throttle happened at.
    ceiling: Option<f64>,
    last_throttle: Option<Instant>,
    tokens: f64,
    last: Instant,
    /// Successes of the last second: what the cloud accepted, the quota's best estimate when throttled.
    accepted: VecDeque<Instant>,
}

impl TokenBucket {
    pub fn new(rate: f64, now: Instant) -> Self {
        let min_rate = (rate / 64.0).min(0.1);
        // No saved-up burst at start: until the cloud has answered, the configured rate is only a guess, and a
        // burst above the real quota is what costs throttles.
        TokenBucket {
            max_rate: rate,
            min_rate,
            rate,
            ceiling: None,
            last_throttle: None,
            tokens: 1.0,
            last: now,
            accepted: VecDeque::new(),
        }
    }

    fn burst(&self) -> f64 {
        self.rate.max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst());
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

    /// The cloud throttled a call: once per episode, remember the rate and back off from it.
    pub fn on_throttle(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
        if self.last_throttle.is_some_and(|t| now.saturating_duration_since(t) < EPISODE) {
            return;
        }
        self.last_throttle = Some(now);
        // Sending above the quota, what the cloud accepted in the last second is about the quota.
        self.forget_accepted(now);
        let accepted = self.accepted.len() as f64;
        // The ceiling is just above that (never the rate we sent at, which the fast climb would return to at once,
        // throttle after throttle); the rate backs off to the accepted rate, or further with nothing accepted.
        let (ceiling, rate) = if accepted > 0.0 {
            (self.rate.min(accepted * 1.1), (self.rate * BACKOFF).min(accepted))
        } else {
            (self.rate, self.rate * BACKOFF * BACKOFF)
        };
        self.ceiling = Some(ceiling);
        self.rate = rate.max(self.min_rate);
    }

    fn forget_accepted(&mut self, now: Instant) {
        while self.accepted.front().is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1)) {
            self.accepted.pop_front();
        }
    }

    /// A call succeeded: climb, fast towards the learned ceiling, slowly above it.
    pub fn on_success(&mut self, now: Instant) {
        self.forget_accepted(now);
        if self.accepted.len() < (self.max_rate.ceil() as usize).max(1) * 2 {
            self.accepted.push_back(now);
        }
        if self.last_throttle.is_some_and(|t| now.saturating_duration_since(t) >= FORGET) {
            self.ceiling = None;
        }
        if self.rate >= self.max_rate {
            return;
        }
        self.refill(now);
        let step = match self.ceiling {
            None => self.max_rate * 0.05,
            Some(c) if self.rate < c * CRUISE => (c * CRUISE - self.rate) * 0.2 + c * PROBE,
            Some(c) => c * PROBE,
        };
        self.rate = (self.rate + step).min(self.max_rate);
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
        // No opening burst: 1 at once, then 24 at 5/s.
        let took = start.elapsed().as_secs_f64();
        assert!((4.7..=4.9).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_decrease_per_episode_then_fast_back_to_the_ceiling_and_forgotten_after_a_quiet_minute() {
        let mut now = Instant::now();
        let mut b = TokenBucket::new(8.0, now);
        // Throttled with nothing accepted in the last second: backed off twice.
        b.on_throttle(now);
        let first = b.rate();
        assert!((first - 8.0 * BACKOFF * BACKOFF).abs() < 1e-9, "{first}");
        // In-flight calls of the same episode do not compound the decrease.
        b.on_throttle(now + EPISODE / 2);
        assert_eq!(b.rate(), first);
        // Throttled while the cloud accepted 12 in the last second: backed off to that (below 70%), not below.
        let mut c = TokenBucket::new(20.0, now);
        for i in 0..12 {
            c.on_success(now + Duration::from_millis(50 * i));
        }
        c.on_throttle(now + Duration::from_millis(700));
        assert!((c.rate() - 12.0).abs() < 1e-9, "{}", c.rate());
        // No burst right after a throttle: the next call waits.
        assert!(b.reserve(now) > Duration::ZERO);
        for _ in 0..30 {
            now += Duration::from_millis(200);
            b.on_success(now);
        }
        assert!(b.rate() >= 8.0 * CRUISE - 0.1 && b.rate() < 8.0, "{}", b.rate());
        // A minute without a throttle: the ceiling is forgotten and the rate climbs to the configured one.
        now += FORGET;
        for _ in 0..30 {
            b.on_success(now);
        }
        assert_eq!(b.rate(), 8.0);
        for _ in 0..200 {
            now += EPISODE;
            b.on_throttle(now);
        }
        assert!(b.rate() >= b.min_rate - 1e-9);
    }

    /// A cloud's quota: a token bucket of `rate` per second and one second of burst (as the emulator's).
    struct Cloud {
        rate: f64,
        tokens: f64,
        last: Instant,
    }

    impl Cloud {
        fn call(&mut self, now: Instant) -> bool {
            self.tokens =
                (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
            self.last = now;
            let ok = self.tokens >= 1.0;
            if ok {
                self.tokens -= 1.0;
            }
            ok
        }
    }

    /// `calls` calls through a limiter of `configured` against a cloud whose quota follows `quota(elapsed)`,
    /// with 4 in flight at 50 ms each (a target's writers): (accepted, throttled, seconds taken, accepted per
    /// second in each second).
    async fn run(configured: f64, calls: usize, quota: impl Fn(f64) -> f64) -> (usize, usize, f64, Vec<usize>) {
        let l = std::sync::Arc::new(Limiter::new(configured));
        let start = Instant::now();
        let cloud =
            std::sync::Arc::new(std::sync::Mutex::new(Cloud { rate: quota(0.0), tokens: quota(0.0), last: start }));
        let done = std::sync::Arc::new(std::sync::Mutex::new((0usize, 0usize, Vec::<usize>::new())));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (l, cloud, done) = (l.clone(), cloud.clone(), done.clone());
            workers.push(async move {
                loop {
                    if done.lock().unwrap().0 >= calls {
                        return;
                    }
                    l.acquire().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = Instant::now();
                    let ok = cloud.lock().unwrap().call(now);
                    {
                        let mut d = done.lock().unwrap();
                        if ok {
                            d.0 += 1;
                            let sec = now.duration_since(start).as_secs() as usize;
                            if d.2.len() <= sec {
                                d.2.resize(sec + 1, 0);
                            }
                            d.2[sec] += 1;
                        } else {
                            d.1 += 1;
                        }
                    }
                    if ok {
                        l.succeeded().await;
                    } else {
                        l.throttled().await;
                    }
                }
            });
        }
        let q = &quota;
        let c2 = cloud.clone();
        let ticker = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let t = start.elapsed().as_secs_f64();
                c2.lock().unwrap().rate = q(t);
            }
        };
        tokio::select! {
            _ = futures::future::join_all(workers) => {}
            _ = ticker => {}
        }
        let d = done.lock().unwrap();
        (d.0, d.1, start.elapsed().as_secs_f64(), d.2.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn configured_4x_above_the_quota_few_throttles_and_converges_near_the_floor() {
        let (ok, throttled, secs, _) = run(20.0, 1000, |_| 5.0).await;
        let floor = 1000.0 / 5.0;
        let pct = 100.0 * throttled as f64 / (ok + throttled) as f64;
        eprintln!(
            "figure: quota 5/s, configured 20/s: {throttled} throttled ({pct:.1}%), {secs:.1} s = {:.2} × the floor",
            secs / floor
        );
        assert!(pct <= 2.0, "{pct:.1}% throttled");
        assert!(secs <= 1.1 * floor, "{secs:.1} s, floor {floor} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_that_drops_is_held_at_90_percent_within_10_s_and_one_that_rises_is_climbed_back_to() {
        // 20/s for 30 s, 5/s for 120 s, 20/s after.
        let quota = |t: f64| if (30.0..150.0).contains(&t) { 5.0 } else { 20.0 };
        let (_, _, _, per_sec) = run(20.0, 5000, quota).await;
        let held: f64 = per_sec[40..150].iter().sum::<usize>() as f64 / 110.0;
        eprintln!("figure: after the drop to 5/s: {held:.2}/s from 10 s after it ({:.0}%)", 100.0 * held / 5.0);
        assert!(held >= 0.9 * 5.0, "{:?}", &per_sec[30..150]);
        // Back at 20/s: the rate climbs back (within the forget interval and a few seconds).
        let back: f64 = per_sec[220..230].iter().sum::<usize>() as f64 / 10.0;
        eprintln!("figure: 70-80 s after the rise back to 20/s: {back:.1}/s");
        assert!(back >= 0.9 * 20.0, "{:?}", &per_sec[150..]);
    }
}
