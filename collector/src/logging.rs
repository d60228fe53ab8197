//! Logging as node_exporter does it: `--log.level` and `--log.format` (logfmt or JSON) on
//! standard error, with a rate limit per log statement ([`RateLimit`]) so that no input, however
//! often it repeats, can flood the log.
use std::{cell::Cell, collections::HashMap, fmt, sync::Mutex, time::Instant};

use tracing::{Event, Level, Subscriber, field::Field, level_filters::LevelFilter};
use tracing_subscriber::{
    Layer,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer, time::FormatTime},
    layer::{Context, SubscriberExt as _},
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

use crate::cli::{LogFormat, LogLevel};

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    let registry = tracing_subscriber::registry()
        // HTTP/2 (h2) logs every frame at debug: its debug lines would drown the collector's.
        // kube's client logs every failed request as an error; its callers log their failures
        // themselves (the pod watch as its back-off retries, --web.kubernetes-auth once a
        // minute).
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_default(level)
                .with_target("h2", std::cmp::min(level, Level::INFO))
                .with_target(
                    "kube_client::client::builder",
                    if level == Level::DEBUG {
                        LevelFilter::DEBUG
                    } else {
                        LevelFilter::OFF
                    },
                ),
        )
        .with(RateLimit::default());
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Logfmt => registry.with(output.event_format(Logfmt)).init(),
        LogFormat::Json => registry
            .with(output.json().flatten_event(true).with_current_span(false))
            .init(),
    }
}

/// Lines one log statement may write at once before the limit applies.
const BURST: f64 = 100.0;
/// Lines per second one log statement may write after a burst.
const SUSTAINED_PER_SECOND: f64 = 1.0;

/// A token bucket per log statement (callsite): at most [`BURST`] lines at once, then
/// [`SUSTAINED_PER_SECOND`]; so over any `t` seconds one statement writes at most
/// `BURST + t * SUSTAINED_PER_SECOND` lines. When a statement writes again after lines were
/// dropped, a warning first says how many.
#[derive(Default)]
pub struct RateLimit {
    /// By the address of the statement's (static) metadata.
    buckets: Mutex<HashMap<usize, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

thread_local! {
    /// Set while the limiter writes its own warning, which it must not limit or recurse into.
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

impl RateLimit {
    /// Whether one more line of the statement `key` may be written at `now`; if so, how many were
    /// dropped since its last line.
    fn admit(&self, key: usize, now: Instant) -> Option<u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: BURST,
            refilled: now,
            suppressed: 0,
        });
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * SUSTAINED_PER_SECOND;
        bucket.tokens = (bucket.tokens + earned).min(BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if REPORTING.get() {
            return true;
        }
        let key = std::ptr::from_ref(event.metadata()) as usize;
        match self.admit(key, Instant::now()) {
            None => false,
            Some(0) => true,
            Some(suppressed) => {
                REPORTING.set(true);
                let meta = event.metadata();
                tracing::warn!(
                    suppressed,
                    source = format!(
                        "{}:{}",
                        meta.file().unwrap_or("?"),
                        meta.line().unwrap_or(0)
                    ),
                    "log lines dropped by the rate limit (100 at once, then 1 a second per log statement); the next line is of the same statement"
                );
                REPORTING.set(false);
                true
            }
        }
    }
}

/// `time=... level=info source=file.rs:12 msg="..." key=value`, one event a line.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "time=")?;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        write!(
            writer,
            " level={}",
            meta.level().as_str().to_ascii_lowercase()
        )?;
        if let (Some(file), Some(line)) = (meta.file(), meta.line()) {
            let file = file.rsplit('/').next().unwrap_or(file);
            write!(writer, " source={file}:{line}")?;
        }
        let mut visitor = LogfmtFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        writeln!(writer)
    }
}

struct LogfmtFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl tracing::field::Visit for LogfmtFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = write_pair(self.writer, field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn write_pair(writer: &mut Writer<'_>, key: &str, value: &str) -> fmt::Result {
    let key = if key == "message" { "msg" } else { key };
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if needs_quotes {
        write!(writer, " {key}={value:?}")
    } else {
        write!(writer, " {key}={value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_is_limited_and_the_drop_counted() {
        let limit = RateLimit::default();
        let start = Instant::now();
        let admitted = (0..1000)
            .filter(|_| limit.admit(1, start).is_some())
            .count();
        assert_eq!(admitted, BURST as usize);
        // Another statement has its own bucket.
        assert_eq!(limit.admit(2, start), Some(0));
        // Ten seconds later: ten more, the first told of the 900 dropped.
        let later = start + std::time::Duration::from_secs(10);
        assert_eq!(limit.admit(1, later), Some(900));
        let more = (0..100).filter(|_| limit.admit(1, later).is_some()).count();
        assert_eq!(more, 9);
    }
}
