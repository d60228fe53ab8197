//! Logging as node_exporter does it: `--log.level` and `--log.format` (logfmt or JSON) on
//! standard error.
use std::fmt;

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer, time::FormatTime},
    registry::LookupSpan,
};

use crate::cli::{LogFormat, LogLevel};

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Logfmt => builder.event_format(Logfmt).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
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
