//! Pinning threads to cores and asking for real-time priority.

use serde::Serialize;

/// Where a stage's replicas may run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Pin {
    /// Wherever the OS schedules them.
    #[default]
    None,
    /// Every replica may run on any of these cores.
    Cores(Vec<usize>),
    /// Replica `i` may run on the cores of entry `i`; there must be one entry per replica.
    PerReplica(Vec<Vec<usize>>),
}

impl Pin {
    /// Pins every replica to one core.
    pub fn core(core: usize) -> Self {
        Pin::Cores(vec![core])
    }

    /// The core list of replica `i` (empty: not pinned).
    pub fn for_replica(&self, i: usize) -> Vec<usize> {
        match self {
            Pin::None => Vec::new(),
            Pin::Cores(c) => c.clone(),
            Pin::PerReplica(v) => v.get(i).cloned().unwrap_or_default(),
        }
    }
}

/// The scheduling priority of a stage's threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Priority {
    /// The OS default.
    #[default]
    Normal,
    /// `SCHED_FIFO` at this priority (1–99). If the OS refuses (no `CAP_SYS_NICE`, no rtprio limit),
    /// the thread keeps its normal priority and the report says so.
    Realtime(u8),
}

/// The cores this process may run on, as the OS reports them.
pub fn available_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    v.sort_unstable();
    v
}

/// Pins the calling thread to `cores`.
#[cfg(target_os = "linux")]
pub(crate) fn pin_current(cores: &[usize]) -> Result<(), String> {
    if cores.is_empty() {
        return Ok(());
    }
    // SAFETY: `cpu_set_t` is plain data for which all-zero is a valid (empty) set; CPU_ZERO/CPU_SET
    // only write inside it, and every index was checked against the available cores at build time
    // (and is below CPU_SETSIZE, checked here).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cores {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(format!("core {c} is beyond CPU_SETSIZE"));
            }
            libc::CPU_SET(c, &mut set);
        }
        // pid 0: the calling thread.
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Pins the calling thread to `cores` (one core only on this OS).
#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_current(cores: &[usize]) -> Result<(), String> {
    match cores {
        [] => Ok(()),
        [c] => {
            if core_affinity::set_for_current(core_affinity::CoreId { id: *c }) {
                Ok(())
            } else {
                Err("the OS refused".into())
            }
        }
        _ => Err("pinning to a list of cores is only supported on Linux".into()),
    }
}

/// Sets the calling thread's priority; `Err` says why the OS refused.
pub(crate) fn set_priority(p: Priority) -> Result<(), String> {
    match p {
        Priority::Normal => Ok(()),
        Priority::Realtime(level) => {
            #[cfg(unix)]
            {
                use thread_priority::*;
                let value = ThreadPriorityValue::try_from(level.clamp(1, 99)).map_err(|e| e.to_string())?;
                set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Crossplatform(value),
                    ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
                )
                .map_err(|e| format!("{e:?}"))
            }
            #[cfg(not(unix))]
            {
                let _ = level;
                Err("real-time priority is only supported on Unix".into())
            }
        }
    }
}
