//! The families of SPEC §13 (calls seen on the wire). Countries are
//! labelled `+CC`; numbers never become labels.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::family;
use crate::report::{CallsSnapshot, Histogram, DURATION_BUCKETS};

/// A histogram read from the book (prometheus-client's own is a live one).
#[derive(Debug)]
struct ConstHistogram(Histogram);

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS
            .iter()
            .zip(&self.0.buckets)
            .map(|(b, n)| (*b, *n))
            .collect();
        buckets.push((f64::MAX, self.0.buckets[DURATION_BUCKETS.len()]));
        encoder.encode_histogram::<NoLabelSet>(self.0.sum, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

pub(super) fn encode_calls(c: &CallsSnapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "sipshield_calls",
        "Calls ended, by interface, class of the dialled number and outcome (answered, failed, cancelled, expired).",
        MetricType::Counter,
        c.totals.iter().map(|(i, class, o, n)| {
            (
                vec![("interface", i.clone()), ("class", class.as_str().into()), ("outcome", o.as_str().into())],
                ConstCounter::new(*n),
            )
        }),
    )?;
    family(
        enc,
        "sipshield_calls_active",
        "Calls in progress (ringing or answered), by interface and class, as of the last sweep (5 s).",
        MetricType::Gauge,
        c.active.iter().map(|(i, class, n)| {
            (
                vec![("interface", i.clone()), ("class", class.as_str().into())],
                ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX)),
            )
        }),
    )?;
    family(
        enc,
        "sipshield_call_duration_seconds",
        "Answered calls' durations (answer to end), by class.",
        MetricType::Histogram,
        c.durations
            .iter()
            .map(|(class, h)| (vec![("class", class.as_str().into())], ConstHistogram(h.clone()))),
    )?;
    family(
        enc,
        "sipshield_calls_by_country",
        "International calls ended, by interface, E.164 country code (+33) and outcome.",
        MetricType::Counter,
        c.by_country.iter().map(|(i, code, o, n)| {
            (
                vec![
                    ("interface", i.clone()),
                    ("country", crate::dest::country_label(*code)),
                    ("outcome", o.as_str().into()),
                ],
                ConstCounter::new(*n),
            )
        }),
    )?;
    let m = enc.encode_descriptor(
        "sipshield_long_calls",
        "Calls in progress longer than [calls] long_call, as of the last sweep.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::try_from(c.long_calls).unwrap_or(i64::MAX)).encode(m)
}
