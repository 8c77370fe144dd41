//! The one paginator of the three clouds' listings. Each provider parses its own page and says where the next
//! one starts (AWS and Huawei: a marker; Alibaba: a page number); this walks them, paced (one read token per
//! page, see `before_page`), with no page cap: a listing ends when the cloud says so, so a large account is
//! slow to list, never a permanent failure. A page that fails with a retryable error (a timeout, throttling,
//! a 5xx) is asked again from its own cursor, with backoff, instead of restarting the listing from page 1.
//! A marker the cloud repeats, or a page that starts with the previous page's first entry (an endpoint that
//! ignores the cursor), would loop forever: errors rather than a silently partial listing.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::http::{invalid_response, wanted};
use super::{ErrorClass, LiveAlias, ProviderError};

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Marker(String),
    /// 1-based.
    Page(u64),
}

/// One parsed page: its entries and where the next starts (None: this was the last).
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// Attempts per page (the first and its retries) before the listing fails.
pub const PAGE_ATTEMPTS: usize = 5;

fn page_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .with_max_times(PAGE_ATTEMPTS - 1)
        .build()
}

/// Whether a failed page is worth asking again: the failures a moment can heal.
fn retryable(e: &ProviderError) -> bool {
    matches!(e.class, ErrorClass::Throttled | ErrorClass::Transient)
}

/// Walks the pages `fetch` returns from the first (cursor None), handing each entry to `visit` until it
/// returns true (found: the walk stops) or the pages end. `what` names the listing in errors.
pub async fn walk<T, F, Fut>(what: &str, fetch: F, mut visit: impl FnMut(T) -> bool) -> Result<(), ProviderError>
where
    T: PartialEq + Clone,
    F: Fn(Option<Cursor>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ProviderError>>,
{
    let mut cursor: Option<Cursor> = None;
    let mut markers: HashSet<String> = HashSet::new();
    let mut prev_first: Option<T> = None;
    loop {
        let mut backoff = page_backoff();
        let page = loop {
            super::before_page().await;
            match fetch(cursor.clone()).await {
                Ok(p) => break p,
                Err(e) if retryable(&e) => match backoff.next() {
                    Some(d) => {
                        tracing::debug!(listing = what, cursor = ?cursor, error = %e, retry_in_ms = d.as_millis() as u64, "page failed; asking for it again");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        };
        if page.items.first().is_some_and(|f| prev_first.as_ref() == Some(f)) {
            return Err(invalid_response(format!("{what}: page {cursor:?} repeats the previous page")));
        }
        prev_first = page.items.first().cloned();
        for item in page.items {
            if visit(item) {
                return Ok(());
            }
        }
        match page.next {
            None => return Ok(()),
            Some(Cursor::Marker(m)) if !markers.insert(m.clone()) => {
                return Err(invalid_response(format!("{what}: the next-page marker repeated")))
            }
            next => cursor = next,
        }
    }
}

/// Every page of a listing whose entries are named aliases (AWS, Alibaba), handing `visit` the ones that are ours:
/// under one of `prefixes` and never under the cloud-managed `reserved` prefix.
pub async fn list_wanted<T, F, Fut>(
    what: &str,
    fetch: F,
    reserved: &str,
    prefixes: &[String],
    visit: &mut (dyn FnMut(LiveAlias) + Send),
) -> Result<(), ProviderError>
where
    T: PartialEq + Clone + AsRef<str> + Into<LiveAlias>,
    F: Fn(Option<Cursor>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ProviderError>>,
{
    let keep = |a: T| {
        if wanted(a.as_ref(), reserved, prefixes) {
            visit(a.into());
        }
        false
    };
    walk(what, fetch, keep).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn transient() -> ProviderError {
        ProviderError::new(ErrorClass::Transient, "RequestTimeout", "timeout", "timed out")
    }

    /// `pages` pages of 2 entries, marker-linked; the cursors asked for are recorded; `fail` says which call
    /// (0-based) fails.
    struct Fake {
        pages: u64,
        asked: Mutex<Vec<Option<Cursor>>>,
        fail: fn(usize) -> Option<ProviderError>,
    }

    impl Fake {
        async fn page(&self, c: Option<Cursor>) -> Result<Page<u64>, ProviderError> {
            let n = {
                let mut a = self.asked.lock().unwrap();
                a.push(c.clone());
                a.len() - 1
            };
            if let Some(e) = (self.fail)(n) {
                return Err(e);
            }
            let i = match c {
                None => 0,
                Some(Cursor::Marker(m)) => m.parse().unwrap(),
                Some(Cursor::Page(p)) => p - 1,
            };
            let next = (i + 1 < self.pages).then(|| Cursor::Marker((i + 1).to_string()));
            Ok(Page { items: vec![2 * i, 2 * i + 1], next })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_page_cap_and_a_failed_page_resumes_where_it_stopped() {
        // 20,000 pages: twice the old cap.
        let f = Fake { pages: 20_000, asked: Mutex::new(Vec::new()), fail: |n| (n == 7 || n == 8).then(transient) };
        let mut got = 0u64;
        walk(
            "test",
            |c| f.page(c),
            |_| {
                got += 1;
                false
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 40_000);
        let asked = f.asked.lock().unwrap();
        assert_eq!(asked.len(), 20_002, "two retries, no restart");
        // Calls 7 and 8 failed on page 7; call 9 asked for page 7 again, not page 1.
        assert_eq!(asked[7], asked[9]);
        assert_eq!(asked[9], Some(Cursor::Marker("7".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_that_keeps_failing_fails_the_listing_and_a_permanent_error_at_once() {
        let f = Fake { pages: 3, asked: Mutex::new(Vec::new()), fail: |n| (n >= 1).then(transient) };
        assert!(walk("test", |c| f.page(c), |_| false).await.is_err());
        assert_eq!(f.asked.lock().unwrap().len(), 1 + PAGE_ATTEMPTS);
        let denied = |_| Some(ProviderError::new(ErrorClass::Permanent, "AccessDenied", "denied", "no"));
        let f = Fake { pages: 3, asked: Mutex::new(Vec::new()), fail: denied };
        assert!(walk("test", |c| f.page(c), |_| false).await.is_err());
        assert_eq!(f.asked.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_repeated_marker_is_an_error_and_visit_can_stop_the_walk() {
        let looping = |c: Option<Cursor>| async move {
            let first = u32::from(c.is_some());
            Ok(Page { items: vec![first], next: Some(Cursor::Marker("m".into())) })
        };
        let e = walk("loop", looping, |_: u32| false).await.unwrap_err();
        assert!(e.message.contains("marker repeated"), "{e:?}");
        // Numbered pages that ignore the number: the same page again.
        let same = |c: Option<Cursor>| async move {
            let n = match c {
                Some(Cursor::Page(n)) => n,
                _ => 1,
            };
            Ok(Page { items: vec![7u32, 8], next: Some(Cursor::Page(n + 1)) })
        };
        let e = walk("same", same, |_| false).await.unwrap_err();
        assert!(e.message.contains("repeats the previous page"), "{e:?}");
        let f = Fake { pages: 10, asked: Mutex::new(Vec::new()), fail: |_| None };
        walk("stop", |c| f.page(c), |x| x == 5).await.unwrap();
        assert_eq!(f.asked.lock().unwrap().len(), 3);
    }
}
