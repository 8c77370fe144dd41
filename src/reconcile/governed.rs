//! A target's view of its provider: every call waits for the target's token bucket (writes and reads
//! apart, as the clouds meter them), is timed and counted, and throttling slows the bucket (AIMD).
//! The drift scanner and the workers both go through it, so one bucket spends the target's quota.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::bucket::Limiter;
use crate::provider::{with_pacer, ErrorClass, KeyFacts, KmsAliases, LiveAlias, Operation, PagePacer, ProviderError};
use crate::telemetry::metrics::metrics;

pub struct Governed {
    inner: Arc<dyn KmsAliases>,
    target: String,
    provider: &'static str,
    writes: Limiter,
    reads: Arc<Limiter>,
}

/// Spends one read token per listing page, and counts the pages.
struct ReadPacer {
    reads: Arc<Limiter>,
    target: String,
    /// The call paid one read token already (a get): its first page is that one.
    prepaid: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl PagePacer for ReadPacer {
    async fn before_page(&self) {
        if !self.prepaid.swap(false, Ordering::Relaxed) {
            self.reads.acquire().await;
        }
        metrics().list_pages.with_label_values(&[&self.target]).inc();
    }
}

/// A probe's pacer: pays for the first page; asking for a second means the first was accepted, which
/// is all a probe wants to know, so it signals and never returns (the probe drops the listing).
struct ProbePacer {
    reads: Arc<Limiter>,
    target: String,
    pages: AtomicU32,
    accepted: Arc<Notify>,
}

#[async_trait]
impl PagePacer for ProbePacer {
    async fn before_page(&self) {
        if self.pages.fetch_add(1, Ordering::Relaxed) > 0 {
            self.accepted.notify_one();
            std::future::pending::<()>().await;
        }
        self.reads.acquire().await;
        metrics().list_pages.with_label_values(&[&self.target]).inc();
    }
}

impl Governed {
    fn read_pacer(&self, prepaid: bool) -> Arc<dyn PagePacer> {
        Arc::new(ReadPacer { reads: self.reads.clone(), target: self.target.clone(), prepaid: prepaid.into() })
    }

    pub fn new(
        inner: Arc<dyn KmsAliases>,
        target: &str,
        provider: &'static str,
        write_rate: f64,
        read_rate: f64,
    ) -> Self {
        let m = metrics();
        m.rate_limit.with_label_values(&[target, "write"]).set(write_rate);
        m.rate_limit.with_label_values(&[target, "read"]).set(read_rate);
        Governed {
            inner,
            target: target.into(),
            provider,
            writes: Limiter::new(write_rate),
            reads: Arc::new(Limiter::new(read_rate)),
        }
    }

    async fn run<T, F>(&self, op: Operation, f: F) -> Result<T, ProviderError>
    where
        F: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let (limiter, class) = if op.is_write() { (&self.writes, "write") } else { (&*self.reads, "read") };
        // A listing pays per page, through its pacer.
        if op != Operation::List {
            limiter.acquire().await;
        }
        let start = Instant::now();
        let res = f.await;
        let m = metrics();
        m.provider_duration.with_label_values(&[&self.target, op.as_str()]).observe(start.elapsed().as_secs_f64());
        let code = match &res {
            Ok(_) => "ok",
            Err(e) => e.label,
        };
        m.provider_requests.with_label_values(&[&self.target, self.provider, op.as_str(), code]).inc();
        let rate = match &res {
            Err(e) if e.class == ErrorClass::Throttled => {
                let r = limiter.throttled().await;
                tracing::warn!(target_name = %self.target, operation = op.as_str(), rate = r, "throttled; slowing down");
                Some(r)
            }
            Ok(_) => Some(limiter.succeeded().await),
            Err(_) => None,
        };
        if let Some(r) = rate {
            m.rate_limit.with_label_values(&[&self.target, class]).set(r);
        }
        res
    }
}

#[async_trait]
impl KmsAliases for Governed {
    async fn list_each(
        &self,
        prefixes: &[String],
        visit: &mut (dyn FnMut(LiveAlias) + Send),
    ) -> Result<(), ProviderError> {
        self.run(Operation::List, with_pacer(self.read_pacer(false), self.inner.list_each(prefixes, visit))).await
    }
    /// One listing page at most: the cheapest call that needs credentials and permissions but no key.
    async fn probe(&self, prefixes: &[String]) -> Result<(), ProviderError> {
        let accepted = Arc::new(Notify::new());
        let pacer = Arc::new(ProbePacer {
            reads: self.reads.clone(),
            target: self.target.clone(),
            pages: AtomicU32::new(0),
            accepted: accepted.clone(),
        });
        let mut ignore = |_| {};
        let listing = with_pacer(pacer, self.inner.list_each(prefixes, &mut ignore));
        self.run(Operation::List, async move {
            tokio::select! {
                r = listing => r,
                _ = accepted.notified() => Ok(()),
            }
        })
        .await
    }
    // A provider that looks an alias up by listing (Huawei: get, create's duplicate check, delete) pays each
    // page from the read quota too, as a listing does.
    async fn get_alias(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        // A get pays one read token; a lookup by listing (Huawei) makes that token its first page's.
        self.run(Operation::Get, with_pacer(self.read_pacer(true), self.inner.get_alias(alias))).await
    }
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        self.run(Operation::Create, with_pacer(self.read_pacer(false), self.inner.create_alias(alias, key_id))).await
    }
    async fn update_alias(&self, alias: &str, key_id: &str) -> Result<(), ProviderError> {
        self.run(Operation::Update, with_pacer(self.read_pacer(false), self.inner.update_alias(alias, key_id))).await
    }
    async fn delete_alias(&self, alias: &str, current_key: Option<&str>) -> Result<(), ProviderError> {
        self.run(Operation::Delete, with_pacer(self.read_pacer(false), self.inner.delete_alias(alias, current_key)))
            .await
    }
    /// A read: one token of the read quota (the pre-flight must not eat into the alias writes' quota).
    async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError> {
        self.run(Operation::Describe, self.inner.describe_key(key_id)).await
    }
    fn key_matches(&self, desired: &str, live: &str) -> bool {
        self.inner.key_matches(desired, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider whose lookups walk pages, as Huawei's do (get, create's duplicate check, delete).
    struct Paging;

    #[async_trait]
    impl KmsAliases for Paging {
        async fn list_each(&self, _: &[String], _: &mut (dyn FnMut(LiveAlias) + Send)) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn get_alias(&self, _: &str) -> Result<Option<String>, ProviderError> {
            for _ in 0..3 {
                crate::provider::before_page().await;
            }
            Ok(None)
        }
        async fn create_alias(&self, _: &str, _: &str) -> Result<(), ProviderError> {
            self.get_alias("").await.map(drop)
        }
        async fn update_alias(&self, _: &str, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn delete_alias(&self, _: &str, _: Option<&str>) -> Result<(), ProviderError> {
            self.get_alias("").await.map(drop)
        }
        async fn describe_key(&self, key_id: &str) -> Result<Option<KeyFacts>, ProviderError> {
            Ok(Some(KeyFacts {
                key_id: key_id.into(),
                state: crate::provider::KeyState::Enabled,
                spec: "SYMMETRIC_DEFAULT".into(),
                usage: "ENCRYPT_DECRYPT".into(),
            }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn describe_key_is_a_read_counted_as_describe_key() {
        let target = "governed-describe";
        // Writes at 1/s would make a describe paid from the write quota wait; reads at 1000/s do not.
        let g = Governed::new(Arc::new(Paging), target, "aws", 1.0, 1000.0);
        let calls = || metrics().provider_requests.with_label_values(&[target, "aws", "describe_key", "ok"]).get();
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            assert!(g.describe_key("k").await.unwrap().is_some());
        }
        assert!(t0.elapsed() < std::time::Duration::from_millis(100), "{:?}", t0.elapsed());
        assert_eq!(calls(), 5);
        // With a read quota of 1/s the reads are what waits.
        let slow = Governed::new(Arc::new(Paging), "governed-describe-slow", "aws", 1000.0, 1.0);
        let t1 = tokio::time::Instant::now();
        for _ in 0..3 {
            slow.describe_key("k").await.unwrap();
        }
        let took = t1.elapsed().as_secs_f64();
        assert!((1.9..2.6).contains(&took), "3 describes at 1 read/s: {took}");
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_that_walk_pages_pay_each_page_from_the_read_quota() {
        let target = "governed-paging";
        let g = Governed::new(Arc::new(Paging), target, "huawei", 100.0, 1000.0);
        let pages = || metrics().list_pages.with_label_values(&[target]).get();
        g.get_alias("alias/x").await.unwrap();
        assert_eq!(pages(), 3);
        // Three read tokens at 100/s, the first one paid by the get itself (not twice).
        let slow = Governed::new(Arc::new(Paging), "governed-paging-slow", "huawei", 100.0, 1.0);
        let t1 = tokio::time::Instant::now();
        slow.get_alias("alias/x").await.unwrap();
        let took = t1.elapsed().as_secs_f64();
        assert!((1.9..2.6).contains(&took), "3 pages at 1 read/s with no opening burst: {took}");

        g.create_alias("alias/x", "k").await.unwrap();
        g.delete_alias("alias/x", None).await.unwrap();
        assert_eq!(pages(), 9, "create and delete look the alias up by listing: 3 pages each");
    }
}
