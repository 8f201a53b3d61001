//! Device memory per replica: one engine (shared weights) with N sessions, against N engines with
//! one session each, read with `cuMemGetInfo` (TensorRT-YOLO's table: 408 → 790 MB for 4 clones of
//! YOLO11x, against 1470 MB for 4 independent loads).
//!
//! Each replica is what a pipeline replica is: a thread that owns a tract-cuda session (its own
//! CUDA stream, cuBLAS and cuDNN handles, and activation arena) and has run once. The replicas stay
//! alive while the memory is read.

use std::path::Path;
use std::sync::{mpsc, Arc};

use framepipe_infer::{load, Engine, EngineChoice, EngineOptions, InferError, TensorRef};

use crate::driver::{self, DeviceInfo};
use crate::CudaError;

/// How the replicas get their weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// One engine (one copy of the weights), one session per replica.
    Shared,
    /// One engine per replica (the model loaded N times).
    Independent,
}

impl Sharing {
    /// `shared` or `independent`.
    pub fn name(&self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Independent => "independent",
        }
    }
}

impl std::str::FromStr for Sharing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(Sharing::Shared),
            "independent" => Ok(Sharing::Independent),
            other => Err(format!("`{other}`: expected shared or independent")),
        }
    }
}

/// One measurement: the device memory in use with `replicas` live replicas, over the baseline.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemPoint {
    /// Live replicas.
    pub replicas: usize,
    /// Bytes in use over the baseline.
    pub bytes: usize,
}

/// What one replica added to the device memory, step by step (bytes; negative when the driver
/// gave memory back).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStep {
    /// The replica (1-based).
    pub replica: usize,
    /// Loading its engine on the measuring thread (weights, and what the load's own first run
    /// leaves): 0 for a shared replica after the first.
    pub load: i64,
    /// Its thread's CUDA stream and cuBLAS and cuDNN handles.
    pub thread: i64,
    /// Its session after a first run (activation arena, per-shape cuDNN state).
    pub session: i64,
}

/// The memory a set of replica counts takes, one way of sharing.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MemTable {
    /// The model file.
    pub model: String,
    /// How the weights were shared.
    pub sharing: Sharing,
    /// The device.
    pub device: DeviceInfo,
    /// Bytes in use before any model was loaded (the CUDA context, tract-cuda's kernels, the
    /// measuring thread's stream and handles, and other processes).
    pub baseline_bytes: usize,
    /// One point per replica count, in increasing order.
    pub points: Vec<MemPoint>,
    /// What each replica added, step by step.
    pub steps: Vec<ReplicaStep>,
    /// `CUBLAS_WORKSPACE_CONFIG` during the measurement (`None`: cuBLAS's default workspace).
    #[serde(default)]
    pub cublas_workspace: Option<String>,
}

impl MemTable {
    /// The bytes with `n` replicas, if measured.
    pub fn bytes(&self, n: usize) -> Option<usize> {
        self.points.iter().find(|p| p.replicas == n).map(|p| p.bytes)
    }
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// Each extra replica's memory as a fraction of the first one's: `(m(n) - m(1)) / (n - 1) / m(1)`.
pub fn extra_fraction(table: &MemTable, n: usize) -> Option<f64> {
    let first = table.bytes(1)? as f64;
    let now = table.bytes(n)? as f64;
    (n > 1 && first > 0.0).then(|| (now - first) / (n - 1) as f64 / first)
}

/// The side-by-side table for the terminal, with the ≤ 15 % target per extra shared replica.
pub fn render(shared: &MemTable, independent: Option<&MemTable>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "device memory per replica ({}), model {}", shared.device, shared.model);
    let _ = writeln!(
        s,
        "cuBLAS workspace: {}",
        shared
            .cublas_workspace
            .as_deref()
            .map_or("cuBLAS's default".to_string(), |c| format!("CUBLAS_WORKSPACE_CONFIG={c}"))
    );
    let _ = writeln!(
        s,
        "baseline (context, kernels, measuring thread): {:.0} MB shared run{}",
        mb(shared.baseline_bytes),
        independent.map_or(String::new(), |t| format!(", {:.0} MB independent run", mb(t.baseline_bytes)))
    );
    let _ = writeln!(
        s,
        "{:>8} {:>12} {:>16} {:>16} {:>16}",
        "replicas", "shared MB", "extra/replica", "independent MB", "extra/replica"
    );
    for p in &shared.points {
        let n = p.replicas;
        let frac = |t: &MemTable| extra_fraction(t, n).map_or("-".to_string(), |f| format!("{:+.1}%", 100.0 * f));
        let ind = independent.and_then(|t| t.bytes(n));
        let _ = writeln!(
            s,
            "{:>8} {:>12.0} {:>16} {:>16} {:>16}",
            n,
            mb(p.bytes),
            frac(shared),
            ind.map_or("-".to_string(), |b| format!("{:.0}", mb(b))),
            independent.map_or("-".to_string(), frac)
        );
    }
    let mut tables = vec![shared];
    tables.extend(independent);
    for t in tables {
        let show = |r: &ReplicaStep| {
            format!(
                "replica {}: load {:+.0} MB, thread (stream, cuBLAS, cuDNN) {:+.0} MB, session (first run) {:+.0} MB",
                r.replica,
                r.load as f64 / 1e6,
                r.thread as f64 / 1e6,
                r.session as f64 / 1e6
            )
        };
        let shown: Vec<String> = t.steps.iter().take(2).map(show).collect();
        if !shown.is_empty() {
            let _ = writeln!(s, "{}: {}", t.sharing.name(), shown.join("; "));
        }
    }
    let worst = shared.points.iter().filter_map(|p| extra_fraction(shared, p.replicas)).fold(f64::NAN, f64::max);
    if worst.is_finite() {
        let _ = writeln!(
            s,
            "target: each extra shared replica adds <= 15% of the first one's memory: worst {:.1}% ({})",
            100.0 * worst,
            if worst <= 0.15 { "met" } else { "NOT met" }
        );
    }
    s
}

/// A replica thread: creates its CUDA stream and handles, reports; on the first `ctl` message makes
/// its session and runs it once, reports; then keeps everything alive until `ctl` is dropped.
fn spawn_replica(
    engine: Arc<dyn Engine>,
    index: usize,
    ready: mpsc::Sender<Result<(), InferError>>,
    ctl: mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("mem-replica#{index}")).spawn(move || {
        if let Err(e) = framepipe_infer::cuda_prepare_thread() {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        if ctl.recv().is_err() {
            return;
        }
        let result = (|| {
            let mut session = engine.session()?;
            let shape: Vec<usize> = engine.model().inputs[0].shape.iter().map(|d| d.unwrap_or(1)).collect();
            let input = vec![0.5f32; shape.iter().product()];
            session.run(&[TensorRef::new(&shape, &input)])?;
            Ok(session)
        })();
        match result {
            Ok(session) => {
                let _ = ready.send(Ok(()));
                // Blocks until the measurement is over (the sender is dropped).
                let _ = ctl.recv();
                drop(session);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    })
}

/// Measures the device memory with `counts` live replicas of `model` on tract-cuda, sharing the
/// weights or not, and what each replica adds step by step. Run it in a process of its own (the
/// baseline is what the process finds).
pub fn measure(model: &Path, opts: &EngineOptions, sharing: Sharing, counts: &[usize]) -> Result<MemTable, CudaError> {
    let device = driver::check_driver()?;
    // The CUDA context, tract-cuda's kernels and this thread's stream exist before the baseline.
    framepipe_infer::cuda_warm_up(&|_| {})?;
    framepipe_infer::cuda_prepare_thread()?;
    let used = || -> Result<i64, CudaError> { Ok(driver::mem_info()?.used() as i64) };
    let baseline = used()?;
    let max = counts.iter().copied().max().unwrap_or(0);
    let mut engines: Vec<Arc<dyn Engine>> = Vec::new();
    let mut controls = Vec::new();
    let mut handles = Vec::new();
    let mut points = Vec::new();
    let mut steps = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let outcome = (|| -> Result<(), CudaError> {
        let wait = |what: &'static str| -> Result<(), CudaError> {
            match ready_rx.recv() {
                Ok(r) => Ok(r?),
                Err(_) => Err(CudaError::Measure { reason: format!("a replica thread died while {what}") }),
            }
        };
        for i in 1..=max {
            let before = used()?;
            if engines.is_empty() || sharing == Sharing::Independent {
                engines.push(load(model, EngineChoice::TractCuda, opts)?.0);
            }
            let loaded = used()?;
            let engine = Arc::clone(engines.last().expect("loaded above"));
            let (ctl_tx, ctl_rx) = mpsc::channel::<()>();
            handles.push(
                spawn_replica(engine, i, ready_tx.clone(), ctl_rx)
                    .map_err(|e| CudaError::Measure { reason: format!("cannot start a replica thread: {e}") })?,
            );
            wait("creating its stream")?;
            let threaded = used()?;
            let _ = ctl_tx.send(());
            controls.push(ctl_tx);
            wait("running its session")?;
            let ran = used()?;
            steps.push(ReplicaStep {
                replica: i,
                load: loaded - before,
                thread: threaded - loaded,
                session: ran - threaded,
            });
            if counts.contains(&i) {
                points.push(MemPoint { replicas: i, bytes: (ran - baseline).max(0) as usize });
            }
        }
        Ok(())
    })();
    drop(controls);
    for h in handles {
        let _ = h.join();
    }
    outcome?;
    Ok(MemTable {
        model: model.display().to_string(),
        sharing,
        device,
        baseline_bytes: baseline.max(0) as usize,
        points,
        steps,
        cublas_workspace: std::env::var("CUBLAS_WORKSPACE_CONFIG").ok(),
    })
}

/// The prefix of the line a child process prints its table on (see [`child_line`]).
const CHILD_MARK: &str = "FRAMEPIPE_MEM_TABLE ";

/// The line a child process (one that ran [`measure`]) prints on stdout for
/// [`measure_in_processes`] to read.
pub fn child_line(table: &MemTable) -> String {
    format!("{CHILD_MARK}{}", serde_json::to_string(table).expect("a table serializes"))
}

/// Measures both ways of sharing, each in a fresh process (so that each starts from the same
/// baseline and nothing freed by one is counted by the other): `child(sharing)` must build the
/// command that runs [`measure`] for `sharing` and prints [`child_line`]. The children's stderr
/// goes to ours.
pub fn measure_in_processes(
    child: impl Fn(Sharing) -> std::process::Command,
) -> Result<(MemTable, MemTable), CudaError> {
    // Without a driver, say so here rather than through two failed children.
    driver::check_driver()?;
    let run = |sharing: Sharing| -> Result<MemTable, CudaError> {
        let mut cmd = child(sharing);
        let out = cmd
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| CudaError::Measure { reason: format!("cannot start {cmd:?}: {e}") })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().rev().find_map(|l| l.strip_prefix(CHILD_MARK));
        match (out.status.success(), line) {
            (true, Some(json)) => serde_json::from_str(json)
                .map_err(|e| CudaError::Measure { reason: format!("unreadable table from {cmd:?}: {e}") }),
            _ => Err(CudaError::Measure {
                reason: format!(
                    "{} measurement ({cmd:?}) failed with {}: {}",
                    sharing.name(),
                    out.status,
                    stdout.trim()
                ),
            }),
        }
    };
    Ok((run(Sharing::Shared)?, run(Sharing::Independent)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(sharing: Sharing, mb: &[(usize, usize)]) -> MemTable {
        MemTable {
            model: "m.onnx".into(),
            sharing,
            device: DeviceInfo {
                ordinal: 0,
                name: "GPU".into(),
                devices: 1,
                driver_api: (13, 0),
                compute_capability: (9, 0),
                total_bytes: 1 << 30,
            },
            baseline_bytes: 500_000_000,
            points: mb.iter().map(|&(replicas, m)| MemPoint { replicas, bytes: m * 1_000_000 }).collect(),
            steps: vec![ReplicaStep { replica: 1, load: 45_000_000, thread: 30_000_000, session: 60_000_000 }],
            cublas_workspace: None,
        }
    }

    #[test]
    fn the_extra_fraction_is_per_extra_replica_over_the_first() {
        // TensorRT-YOLO's own table: 408 MB for one YOLO11x context, 790 MB for four.
        let t = table(Sharing::Shared, &[(1, 408), (4, 790)]);
        let f = extra_fraction(&t, 4).unwrap();
        assert!((f - (790.0 - 408.0) / 3.0 / 408.0).abs() < 1e-12);
        assert_eq!(extra_fraction(&t, 1), None);
        assert_eq!(extra_fraction(&t, 2), None);
    }

    #[test]
    fn the_table_renders_both_sides_and_the_target() {
        let shared = table(Sharing::Shared, &[(1, 200), (2, 220), (4, 260)]);
        let independent = table(Sharing::Independent, &[(1, 200), (2, 350), (4, 650)]);
        let text = render(&shared, Some(&independent));
        assert!(text.contains("       2          220           +10.0%              350           +75.0%"), "{text}");
        assert!(text.contains("worst 10.0% (met)"), "{text}");
        assert!(text.contains("shared: replica 1: load +45 MB, thread (stream, cuBLAS, cuDNN) +30 MB"), "{text}");
        let line = child_line(&shared);
        let back: MemTable = serde_json::from_str(line.strip_prefix(CHILD_MARK).unwrap()).unwrap();
        assert_eq!(back.points, shared.points);
        assert_eq!(back.steps, shared.steps);
    }
}
