//! The per-target work queue (client-go workqueue semantics): one entry per alias however many events
//! arrive, never handed out twice at once (a change during processing marks it dirty and re-queues it
//! after), failed items wait out a per-item exponential backoff with jitter (backon).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

#[derive(Debug)]
enum Status {
    Ready,
    Delayed(Instant),
    Processing { dirty: bool },
}

#[derive(Debug)]
struct Item {
    status: Status,
    /// Events not yet applied, and since when the oldest of them waits (lag).
    events: u64,
    since: Instant,
    /// Events already pending when the item was handed out; a success applies exactly these.
    taken: u64,
    /// Set when a change arrives during processing.
    dirty_since: Option<Instant>,
    /// Record timestamp (ms) of the oldest pending change (None: queued by a scan, not by a change), and of the
    /// oldest that arrived during processing.
    produced_ms: Option<i64>,
    dirty_produced_ms: Option<i64>,
    attempts: u32,
    backoff: Option<ExponentialBackoff>,
}

/// How a reconcile ended, for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Success,
    Retry,
    /// Permanent failure: dropped until the next change.
    Drop,
    /// The target paused: ready again with no attempt counted and no backoff (the worker starts nothing
    /// while paused, so it runs as soon as the target resumes).
    Park,
}

#[derive(Debug)]
pub struct WorkQueue {
    items: HashMap<Arc<str>, Item>,
    ready: VecDeque<Arc<str>>,
    delayed: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    backoff: ExponentialBuilder,
    ceiling: Duration,
    events: u64,
}

/// The longest wait between two attempts (an alias's write, a target's first listing), jitter
/// included, whatever `backoff_max` says: a cloud that comes back is tried again within it, so a target
/// converges within 30 s of its cloud returning (issue 9: an uncapped 60 s base plus jitter took 47-120 s).
pub const RETRY_CEILING: Duration = Duration::from_secs(20);

/// The delay ceiling for a configured `backoff_max`.
pub fn retry_ceiling(max: Duration) -> Duration {
    max.min(RETRY_CEILING)
}

/// Exponential backoff with jitter that never waits longer than `retry_ceiling(max)`: backon's jitter
/// adds up to one base delay, so the base stops at half the ceiling (delays then fall in [c/2, c)).
pub fn retry_backoff(min: Duration, max: Duration) -> ExponentialBuilder {
    let half = retry_ceiling(max) / 2;
    ExponentialBuilder::default()
        .with_min_delay(min.min(half))
        .with_max_delay(half)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

impl WorkQueue {
    pub fn new(min: Duration, max: Duration) -> Self {
        WorkQueue {
            items: HashMap::new(),
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            backoff: retry_backoff(min, max),
            ceiling: retry_ceiling(max),
            events: 0,
        }
    }

    /// Marks an alias as needing a reconcile: a change produced at `produced_ms` (record timestamp), or a
    /// repair (None).
    pub fn add(&mut self, alias: Arc<str>, now: Instant, produced_ms: Option<i64>) {
        self.events += 1;
        match self.items.get_mut(&alias) {
            None => {
                self.items.insert(
                    alias.clone(),
                    Item {
                        status: Status::Ready,
                        events: 1,
                        since: now,
                        taken: 0,
                        dirty_since: None,
                        produced_ms,
                        dirty_produced_ms: None,
                        attempts: 0,
                        backoff: None,
                    },
                );
                self.ready.push_back(alias);
            }
            Some(it) => {
                it.events += 1;
                // A delayed retry keeps its delay: it reconciles the latest desired value anyway.
                if let Status::Processing { dirty } = &mut it.status {
                    *dirty = true;
                    it.dirty_since.get_or_insert(now);
                    it.dirty_produced_ms = earliest(it.dirty_produced_ms, produced_ms);
                } else {
                    it.produced_ms = earliest(it.produced_ms, produced_ms);
                }
            }
        }
    }

    /// Hands out the next ready alias (with how many attempts it already had, and the record timestamp of the
    /// oldest change it carries), promoting due retries.
    pub fn pop(&mut self, now: Instant) -> Option<(Arc<str>, u32, Option<i64>)> {
        while let Some(Reverse((at, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, alias)) = self.delayed.pop().unwrap();
            if let Some(it) = self.items.get_mut(&alias) {
                if matches!(it.status, Status::Delayed(d) if d == at) {
                    it.status = Status::Ready;
                    self.ready.push_back(alias);
                }
            }
        }
        while let Some(alias) = self.ready.pop_front() {
            let Some(it) = self.items.get_mut(&alias) else { continue };
            if !matches!(it.status, Status::Ready) {
                continue;
            }
            it.status = Status::Processing { dirty: false };
            it.taken = it.events;
            return Some((alias, it.attempts, it.produced_ms));
        }
        None
    }

    /// When the earliest delayed retry becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }

    /// Ends processing of an alias; returns the retry delay when there is one.
    pub fn done(&mut self, alias: &Arc<str>, done: Done, now: Instant) -> Option<Duration> {
        let it = self.items.get_mut(alias)?;
        let Status::Processing { dirty } = it.status else { return None };
        match done {
            Done::Park => {
                it.produced_ms = earliest(it.produced_ms, it.dirty_produced_ms.take());
                it.status = Status::Ready;
                self.ready.push_back(alias.clone());
                None
            }
            Done::Retry => {
                it.attempts += 1;
                let b = it.backoff.get_or_insert_with(|| self.backoff.build());
                let delay = b.next().unwrap_or(self.ceiling).min(self.ceiling);
                it.status = Status::Delayed(now + delay);
                it.dirty_since = None;
                it.produced_ms = earliest(it.produced_ms, it.dirty_produced_ms.take());
                self.delayed.push(Reverse((now + delay, alias.clone())));
                Some(delay)
            }
            Done::Success | Done::Drop => {
                let applied = if done == Done::Success { it.taken } else { it.events };
                it.events -= applied.min(it.events);
                self.events -= applied.min(self.events);
                it.attempts = 0;
                it.backoff = None;
                if dirty {
                    it.status = Status::Ready;
                    it.since = it.dirty_since.take().unwrap_or(now);
                    it.produced_ms = it.dirty_produced_ms.take();
                    if it.events == 0 {
                        it.events = 1;
                        self.events += 1;
                    }
                    self.ready.push_back(alias.clone());
                } else {
                    self.events -= it.events.min(self.events);
                    self.items.remove(alias);
                }
                None
            }
        }
    }

    /// Drops everything (the lease moved away). Items being processed are dropped when they finish.
    pub fn clear(&mut self) {
        self.items.retain(|_, it| matches!(it.status, Status::Processing { .. }));
        for it in self.items.values_mut() {
            it.status = Status::Processing { dirty: false };
        }
        self.ready.clear();
        self.delayed.clear();
        self.events = self.items.values().map(|i| i.events).sum();
    }

    /// Whether the alias is pending (ready, delayed or in progress).
    pub fn contains(&self, alias: &str) -> bool {
        self.items.contains_key(alias)
    }

    /// The pending aliases (ready, delayed or in progress).
    pub fn aliases(&self) -> impl Iterator<Item = &Arc<str>> {
        self.items.keys()
    }

    /// Pending items (ready, delayed or in progress).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn in_progress(&self) -> usize {
        self.items.values().filter(|i| matches!(i.status, Status::Processing { .. })).count()
    }

    /// (events not yet applied, age of the oldest one).
    pub fn lag(&self, now: Instant) -> (u64, Duration) {
        let oldest = self.items.values().map(|i| i.since).min();
        (self.events, oldest.map(|s| now.saturating_duration_since(s)).unwrap_or_default())
    }
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> WorkQueue {
        WorkQueue::new(Duration::from_millis(100), Duration::from_secs(10))
    }
    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_carries_its_oldest_changes_record_time() {
        let mut q = q();
        let now = Instant::now();
        q.add(a("x"), now, Some(200));
        q.add(a("x"), now, Some(100));
        q.add(a("x"), now, None);
        let (x, _, produced) = q.pop(now).unwrap();
        assert_eq!(produced, Some(100));
        // A change during processing: the next round carries it, not the settled ones.
        q.add(a("x"), now, Some(300));
        q.done(&x, Done::Success, now);
        assert_eq!(q.pop(now).unwrap().2, Some(300));
        q.done(&x, Done::Success, now);
        // A repair carries none.
        q.add(a("y"), now, None);
        assert_eq!(q.pop(now).unwrap().2, None);
    }

    #[tokio::test(start_paused = true)]
    async fn dedupes_and_never_hands_out_twice() {
        let mut q = q();
        let now = Instant::now();
        for _ in 0..50 {
            q.add(a("x"), now, None);
        }
        q.add(a("y"), now, None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.lag(now).0, 51);
        let (x, _, _) = q.pop(now).unwrap();
        assert_eq!(&*x, "x");
        // A change while x is processing: not handed out again until x is done.
        q.add(a("x"), now, None);
        assert_eq!(&*q.pop(now).unwrap().0, "y");
        assert!(q.pop(now).is_none());
        q.done(&x, Done::Success, now);
        let (x2, _, _) = q.pop(now).unwrap();
        assert_eq!(&*x2, "x");
        assert_eq!(q.lag(now).0, 2, "y in progress and x's one new event");
        q.done(&x2, Done::Success, now);
        q.done(&a("y"), Done::Success, now);
        assert!(q.is_empty());
        assert_eq!(q.lag(now), (0, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially() {
        let mut q = q();
        q.add(a("x"), Instant::now(), None);
        let mut delays = Vec::new();
        for i in 0..5 {
            let now = Instant::now();
            let (x, attempts, _) = q.pop(now).unwrap();
            assert_eq!(attempts, i);
            let d = q.done(&x, Done::Retry, now).unwrap();
            assert!(q.pop(now).is_none(), "not due yet");
            assert_eq!(q.next_due(), Some(now + d));
            delays.push(d);
            tokio::time::advance(d).await;
        }
        // Jitter adds up to one base delay: each delay lies in [base, 2*base).
        for (i, d) in delays.iter().enumerate() {
            let base = 100u64 << i;
            assert!(d.as_millis() as u64 >= base && (d.as_millis() as u64) < 2 * base + 1, "{i}: {d:?}");
        }
        // A success resets the backoff.
        let now = Instant::now();
        let (x, _, _) = q.pop(now).unwrap();
        q.add(x.clone(), now, None);
        q.done(&x, Done::Success, now);
        let (x, attempts, _) = q.pop(now).unwrap();
        assert_eq!(attempts, 0);
        assert!(q.done(&x, Done::Retry, now).unwrap() < Duration::from_millis(201));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_delays_never_exceed_the_ceiling() {
        // A backoff_max of 60 s (the default before the ceiling); jitter included, no wait may pass the ceiling.
        for (min, max) in [(200, 60_000), (200, 2_000), (30_000, 60_000)] {
            let (min, max) = (Duration::from_millis(min), Duration::from_millis(max));
            let mut q = WorkQueue::new(min, max);
            q.add(a("x"), Instant::now(), None);
            let mut longest = Duration::ZERO;
            for _ in 0..40 {
                let now = Instant::now();
                let (x, _, _) = q.pop(now).unwrap();
                let d = q.done(&x, Done::Retry, now).unwrap();
                longest = longest.max(d);
                tokio::time::advance(d).await;
            }
            let ceiling = retry_ceiling(max);
            assert!(longest <= ceiling && longest >= ceiling / 2, "{min:?}..{max:?}: longest {longest:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_item_keeps_its_delay_on_new_events() {
        let mut q = q();
        let now = Instant::now();
        q.add(a("x"), now, None);
        let (x, _, _) = q.pop(now).unwrap();
        q.done(&x, Done::Retry, now);
        q.add(a("x"), now, None);
        assert!(q.pop(now).is_none());
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn drop_and_clear() {
        let mut q = q();
        let now = Instant::now();
        q.add(a("x"), now, None);
        q.add(a("y"), now, None);
        let (x, _, _) = q.pop(now).unwrap();
        q.clear();
        assert!(q.pop(now).is_none());
        assert_eq!(q.len(), 1, "x still in progress");
        q.done(&x, Done::Drop, now);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn parked_items_are_ready_again_without_an_attempt_or_backoff() {
        let mut q = q();
        let now = Instant::now();
        q.add(a("x"), now, None);
        let (x, _, _) = q.pop(now).unwrap();
        q.done(&x, Done::Retry, now);
        tokio::time::advance(Duration::from_millis(300)).await;
        let now = Instant::now();
        let (x, attempts, _) = q.pop(now).unwrap();
        assert_eq!(attempts, 1);
        assert_eq!(q.done(&x, Done::Park, now), None);
        let (x, attempts, _) = q.pop(now).expect("ready at once");
        assert_eq!(attempts, 1, "a park counts no attempt");
        assert_eq!(q.lag(now).0, 1, "nothing applied");
        q.done(&x, Done::Success, now);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn lag_seconds_tracks_the_oldest() {
        let mut q = q();
        let t0 = Instant::now();
        q.add(a("x"), t0, None);
        tokio::time::advance(Duration::from_secs(3)).await;
        q.add(a("y"), Instant::now(), None);
        assert_eq!(q.lag(Instant::now()).1, Duration::from_secs(3));
    }
}
