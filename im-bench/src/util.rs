//! Small shared pieces: the error type, progress lines, histograms, concurrent openers.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Every error of the tool: a message for the operator.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The result of a tool step.
pub(crate) type Result<T> = std::result::Result<T, BoxError>;

/// An error with its sources, `outer: inner: ...`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// Milliseconds since the Unix epoch (token issue times, run ids).
pub(crate) use im_common::now_ms;

/// A histogram of microseconds, 1 µs to 10 minutes, 3 significant digits.
pub(crate) fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// Records a duration in microseconds (clamped into the histogram's range).
pub(crate) fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// p50, p99, p99.9 and max of a microsecond histogram, as JSON (null when empty).
pub(crate) fn quantiles(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    json!({
        "count": histogram.len(),
        "p50_us": histogram.value_at_quantile(0.5),
        "p99_us": histogram.value_at_quantile(0.99),
        "p999_us": histogram.value_at_quantile(0.999),
        "max_us": histogram.max(),
    })
}

/// Microseconds as a short human figure.
pub(crate) fn human_us(micros: u64) -> String {
    if micros >= 10_000 {
        format!("{:.1} ms", micros as f64 / 1000.0)
    } else if micros >= 1000 {
        format!("{:.2} ms", micros as f64 / 1000.0)
    } else {
        format!("{micros} µs")
    }
}

/// A count with thousands separators.
pub(crate) fn human_count(value: f64) -> String {
    let rounded = value.round() as u64;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints `label: done/total, rate/s` to stderr every second while alive.
pub(crate) struct Progress {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Progress {
    /// Starts printing; `total` 0 prints no total.
    pub(crate) fn new(label: &str, total: u64) -> Self {
        Self::with_counter(label, total, Arc::new(AtomicU64::new(0)))
    }

    /// Starts printing what `done` counts (a counter the work keeps anyway).
    pub(crate) fn with_counter(label: &str, total: u64, done: Arc<AtomicU64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s, label) = (done.clone(), stop.clone(), label.to_owned());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let now = d.load(Ordering::Relaxed);
                let of = if total > 0 {
                    format!("/{total}")
                } else {
                    String::new()
                };
                eprintln!(
                    "  {label}: {now}{of} in {:.0} s, {}/s now",
                    started.elapsed().as_secs_f64(),
                    now - last
                );
                last = now;
            }
        });
        Self { done, stop }
    }

    /// The shared counter, for tasks that count themselves.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What [`open_many`] opened.
pub(crate) struct Opened<T> {
    /// The connections, in no particular order.
    pub(crate) held: Vec<T>,
    /// The first failure, after which no more were started.
    pub(crate) error: Option<String>,
    /// From the first start to the last finish.
    pub(crate) elapsed: Duration,
    /// How long each successful open took.
    pub(crate) latency: Histogram<u64>,
}

/// Opens up to `total` connections with `concurrency` openers, stopping at the first failure
/// (which the result carries).
pub(crate) async fn open_many<T, F, Fut>(
    label: &str,
    total: usize,
    concurrency: usize,
    open: F,
) -> Opened<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let progress = Progress::new(label, total as u64);
    let counter = progress.counter();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let open = Arc::new(open);
    let shared = Arc::new(Mutex::new((
        Vec::with_capacity(total),
        None::<String>,
        micros_histogram(),
    )));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, total.max(1)) {
        let (next, failed, open, shared, counter) = (
            next.clone(),
            failed.clone(),
            open.clone(),
            shared.clone(),
            counter.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut latency = micros_histogram();
            let mut error = None;
            while !failed.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let at = Instant::now();
                match open(n).await {
                    Ok(conn) => {
                        record(&mut latency, at.elapsed());
                        mine.push(conn);
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        error = Some(format!("connection {n}: {}", chain(e.as_ref())));
                        break;
                    }
                }
            }
            let mut guard = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.0.append(&mut mine);
            if guard.1.is_none() {
                guard.1 = error;
            }
            // Same bounds on both sides: adding cannot fail.
            let _ = guard.2.add(&latency);
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = started.elapsed();
    drop(progress);
    let mut guard = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (held, error, latency) =
        std::mem::replace(&mut *guard, (Vec::new(), None, micros_histogram()));
    Opened {
        held,
        error,
        elapsed,
        latency,
    }
}

/// Waits until `counter` reaches `target`, or it stalls for `stall`; returns the count and
/// the time from `since` to the last increase seen.
pub(crate) async fn wait_for(
    counter: &AtomicU64,
    target: u64,
    since: Instant,
    stall: Duration,
) -> (u64, Duration) {
    let mut last = counter.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    let mut elapsed = since.elapsed();
    loop {
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
            elapsed = since.elapsed();
        }
        if now >= target || last_change.elapsed() > stall {
            return (now, elapsed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
