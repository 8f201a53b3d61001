//! Chrome trace-event files (open them in Perfetto or `chrome://tracing`): one span per frame per
//! stage, one lane per stage replica, one process per bench mode, so that a person can see frames
//! overlap.
//!
//! Format: the JSON object form of the Trace Event Format, with complete (`"ph": "X"`) events in
//! microseconds and metadata (`"ph": "M"`) events naming processes and threads.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::AppError;

/// One stage handling one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The lane (thread) it ran on, e.g. `decode`, `pre`, `infer#1`, `worker#0`.
    pub lane: String,
    /// The stage, e.g. `infer`.
    pub stage: &'static str,
    /// The frame's sequence number.
    pub seq: u64,
    /// Start, in microseconds since the trace's epoch.
    pub start_us: f64,
    /// Duration in microseconds.
    pub dur_us: f64,
}

/// A trace with one process per bench mode.
#[derive(Default, Debug)]
pub struct Trace {
    processes: Vec<(String, Vec<Span>)>,
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a process (a bench mode) with its spans.
    pub fn add(&mut self, name: &str, spans: Vec<Span>) {
        self.processes.push((name.to_string(), spans));
    }

    /// Spans of all processes.
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.processes.iter().flat_map(|(_, s)| s.iter())
    }

    /// The trace as a Chrome trace-event JSON value.
    pub fn to_json(&self) -> Value {
        let mut events = Vec::new();
        for (p, (name, spans)) in self.processes.iter().enumerate() {
            let pid = p + 1;
            events.push(json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}));
            events.push(json!({"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}}));
            // Lanes in pipeline order: decode, pre, infer#0.., post, then anything else.
            let order = |lane: &str| -> (usize, String) {
                let base = lane.split('#').next().unwrap_or(lane);
                let rank = ["decode", "pre", "infer", "post", "annotate", "worker"].iter().position(|s| *s == base);
                (rank.unwrap_or(9), lane.to_string())
            };
            let mut lanes: BTreeMap<(usize, String), usize> = BTreeMap::new();
            for s in spans {
                lanes.entry(order(&s.lane)).or_insert(0);
            }
            for (tid, ((_, lane), id)) in lanes.iter_mut().enumerate() {
                *id = tid + 1;
                events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": *id, "args": {"name": lane}}));
                events.push(json!({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": *id, "args": {"sort_index": *id}}));
            }
            for s in spans {
                let tid = lanes[&order(&s.lane)];
                events.push(json!({
                    "name": s.stage, "cat": "frame", "ph": "X", "pid": pid, "tid": tid,
                    "ts": s.start_us, "dur": s.dur_us, "args": {"seq": s.seq}
                }));
            }
        }
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }

    /// Writes the trace to `path`.
    pub fn write(&self, path: &Path) -> Result<(), AppError> {
        let text = serde_json::to_string(&self.to_json()).expect("a trace always serializes");
        std::fs::write(path, text).map_err(|e| AppError::Output { path: path.to_path_buf(), reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_named_and_ordered_and_spans_are_complete_events() {
        let mut t = Trace::new();
        let span = |lane: &str, stage, seq, start| Span { lane: lane.into(), stage, seq, start_us: start, dur_us: 5.0 };
        t.add(
            "pipelined",
            vec![span("infer#1", "infer", 1, 20.0), span("decode", "decode", 0, 0.0), span("pre", "pre", 0, 6.0)],
        );
        let v = t.to_json();
        let events = v["traceEvents"].as_array().unwrap();
        let names: Vec<(&str, u64)> = events
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| (e["args"]["name"].as_str().unwrap(), e["tid"].as_u64().unwrap()))
            .collect();
        assert_eq!(names, vec![("decode", 1), ("pre", 2), ("infer#1", 3)]);
        let x: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 3);
        let infer = x.iter().find(|e| e["name"] == "infer").unwrap();
        assert_eq!(
            (infer["tid"].as_u64(), infer["ts"].as_f64(), infer["args"]["seq"].as_u64()),
            (Some(3), Some(20.0), Some(1))
        );
    }
}
