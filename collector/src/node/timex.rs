//! `timex`: the kernel clock discipline state from adjtimex(2) (modes 0: a read).
use std::sync::Arc;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "timex",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// adjtimex(2)'s return value when the clock is not synchronised.
const TIME_ERROR: libc::c_int = 5;
const STA_NANO: libc::c_int = 0x2000;
const MICROSECONDS: f64 = 1_000_000.0;
const NANOSECONDS: f64 = 1_000_000_000.0;
/// 2^16 scaled parts per million.
const PPM16FRAC: f64 = 65_536.0 * 1_000_000.0;

type Adjtimex = fn(&mut libc::timex) -> std::io::Result<libc::c_int>;

struct TimexCollector {
    adjtimex: Adjtimex,
}

fn adjtimex(buf: &mut libc::timex) -> std::io::Result<libc::c_int> {
    // SAFETY: buf is a zeroed timex (modes 0: read only).
    let state = unsafe { libc::adjtimex(buf) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(state)
}

fn build(_: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(TimexCollector { adjtimex }))
}

impl Collector for TimexCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        // SAFETY: a C struct of integers and arrays, for which all zeroes is a valid value.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let state = match (self.adjtimex)(&mut tx) {
            Ok(state) => state,
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(NoData(format!("not collecting timex metrics: {error}")).into());
            }
            Err(error) => anyhow::bail!("failed to retrieve adjtimex stats: {error}"),
        };
        let divisor = if tx.status & STA_NANO != 0 {
            NANOSECONDS
        } else {
            MICROSECONDS
        };
        let gauges = [
            (
                "sync_status",
                "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
                if state == TIME_ERROR { 0.0 } else { 1.0 },
            ),
            (
                "offset_seconds",
                "Time offset in between local system and reference clock.",
                tx.offset as f64 / divisor,
            ),
            (
                "frequency_adjustment_ratio",
                "Local clock frequency adjustment.",
                1.0 + tx.freq as f64 / PPM16FRAC,
            ),
            (
                "maxerror_seconds",
                "Maximum error in seconds.",
                tx.maxerror as f64 / MICROSECONDS,
            ),
            (
                "estimated_error_seconds",
                "Estimated error in seconds.",
                tx.esterror as f64 / MICROSECONDS,
            ),
            (
                "status",
                "Value of the status array bits.",
                tx.status as f64,
            ),
            (
                "loop_time_constant",
                "Phase-locked loop time constant.",
                tx.constant as f64,
            ),
            (
                "tick_seconds",
                "Seconds between clock ticks.",
                tx.tick as f64 / MICROSECONDS,
            ),
            (
                "pps_frequency_hertz",
                "Pulse per second frequency.",
                tx.ppsfreq as f64 / PPM16FRAC,
            ),
            (
                "pps_jitter_seconds",
                "Pulse per second jitter.",
                tx.jitter as f64 / divisor,
            ),
            (
                "pps_shift_seconds",
                "Pulse per second interval duration.",
                tx.shift as f64,
            ),
            (
                "pps_stability_hertz",
                "Pulse per second stability, average of recent frequency changes.",
                tx.stabil as f64 / PPM16FRAC,
            ),
            (
                "tai_offset_seconds",
                "International Atomic Time (TAI) offset.",
                tx.tai as f64,
            ),
        ];
        for (name, help, value) in gauges {
            out.push(MetricFamily::gauge(format!("node_timex_{name}"), help).with_value(value));
        }
        let counters = [
            (
                "pps_jitter_total",
                "Pulse per second count of jitter limit exceeded events.",
                tx.jitcnt,
            ),
            (
                "pps_calibration_total",
                "Pulse per second count of calibration intervals.",
                tx.calcnt,
            ),
            (
                "pps_error_total",
                "Pulse per second count of calibration errors.",
                tx.errcnt,
            ),
            (
                "pps_stability_exceeded_total",
                "Pulse per second count of stability limit exceeded events.",
                tx.stbcnt,
            ),
        ];
        for (name, help, value) in counters {
            out.push(
                MetricFamily::counter(format!("node_timex_{name}"), help).with_value(value as f64),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn value(out: &[MetricFamily], name: &str) -> f64 {
        let family = out.iter().find(|f| f.name == name).unwrap();
        match family.metrics[0].value {
            Value::Scalar(v) => v,
            _ => unreachable!(),
        }
    }

    #[test]
    fn units_follow_sta_nano() {
        fn fake(tx: &mut libc::timex) -> std::io::Result<libc::c_int> {
            tx.status = STA_NANO | 0x1;
            tx.offset = 1_500_000;
            tx.jitter = 2_000;
            tx.freq = 65_536 * 10;
            tx.maxerror = 16_000;
            tx.tick = 10_000;
            tx.tai = 37;
            Ok(TIME_ERROR)
        }
        let mut out = Vec::new();
        TimexCollector { adjtimex: fake }.update(&mut out).unwrap();
        assert_eq!(value(&out, "node_timex_sync_status"), 0.0);
        assert_eq!(value(&out, "node_timex_offset_seconds"), 0.0015);
        assert_eq!(value(&out, "node_timex_pps_jitter_seconds"), 0.000002);
        assert_eq!(
            value(&out, "node_timex_frequency_adjustment_ratio"),
            1.00001
        );
        assert_eq!(value(&out, "node_timex_maxerror_seconds"), 0.016);
        assert_eq!(value(&out, "node_timex_tick_seconds"), 0.01);
        assert_eq!(value(&out, "node_timex_tai_offset_seconds"), 37.0);
        assert_eq!(out.len(), 17);
    }

    #[test]
    fn permission_denied_is_no_data() {
        fn denied(_: &mut libc::timex) -> std::io::Result<libc::c_int> {
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        }
        let error = TimexCollector { adjtimex: denied }
            .update(&mut Vec::new())
            .unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
