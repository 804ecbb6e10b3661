//! Statistics the sched_ext way: the framework's counters, and a policy's own, served through
//! [`scx_stats`] on the conventional Unix socket (`/var/run/scx/root/stats`), with a
//! description of every field.
//!
//! A scheduler run by [`Runner`](crate::Runner) serves them while it runs (see
//! [`Runner::stats_server`](crate::Runner::stats_server)). [`monitor`] reads them from another
//! process (the `--monitor SECS` of a scheduler's command line) and [`describe`] prints the
//! field descriptions (`--help-stats`). Any `scx_stats` client works too, e.g. a raw request:
//! `{"req":"stats","args":{"target":"top"}}` and a newline, answered by one JSON line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scx_stats::prelude::*;
use scx_stats_derive::Stats as StatsMeta;
use serde::{Deserialize, Serialize};

use crate::{Error, Stats};

/// Where schedulers serve their statistics, as every sched_ext scheduler does.
pub const STATS_SOCKET: &str = "/var/run/scx/root/stats";

/// The statistics a scheduler serves: the framework's counters and the policy's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, StatsMeta)]
#[stat(top, desc = "scx-userland scheduler statistics")]
pub struct Metrics {
    /// CPUs the scheduler manages.
    #[stat(desc = "CPUs the scheduler manages")]
    pub nr_online_cpus: u64,
    /// Tasks running right now.
    #[stat(desc = "Tasks running right now")]
    pub nr_running: u64,
    /// Tasks user space reported as queued.
    #[stat(desc = "Tasks waiting in the policy's queues (as user space reported)")]
    pub nr_queued: u64,
    /// Tasks user space reported as decided but not dispatched.
    #[stat(desc = "Tasks decided on but not yet dispatched (as user space reported)")]
    pub nr_scheduled: u64,
    /// Dispatches from user space that reached a DSQ.
    #[stat(desc = "Dispatches from user space that reached a dispatch queue")]
    pub nr_user_dispatches: u64,
    /// Tasks BPF dispatched itself (per-CPU kernel threads).
    #[stat(desc = "Tasks BPF dispatched itself (per-CPU kernel threads)")]
    pub nr_kernel_dispatches: u64,
    /// Dispatches dropped as stale.
    #[stat(desc = "Dispatches dropped: the task exited, was dequeued or was not waiting")]
    pub nr_cancel_dispatches: u64,
    /// Dispatches sent to a CPU the task may use instead of the one asked for.
    #[stat(desc = "Dispatches redirected to a CPU the task may use")]
    pub nr_bounce_dispatches: u64,
    /// Dispatch ring samples BPF could not read.
    #[stat(desc = "Dispatch ring samples BPF could not read")]
    pub nr_failed_dispatches: u64,
    /// Tasks BPF ran itself because the queued ring was full.
    #[stat(desc = "Tasks BPF ran itself because the queued ring was full")]
    pub nr_sched_congested: u64,
    /// Task records sent to user space.
    #[stat(desc = "Task records sent to user space")]
    pub nr_queued_events: u64,
    /// Exit notices sent to user space.
    #[stat(desc = "Exit notices sent to user space")]
    pub nr_exit_events: u64,
    /// Dispatch records BPF received.
    #[stat(desc = "Dispatch records BPF received")]
    pub nr_dispatch_records: u64,
    /// Times the stall guard took over.
    #[stat(desc = "Times the stall guard found user space stuck and BPF took over")]
    pub nr_stalls: u64,
    /// Tasks BPF ran itself while user space was stuck.
    #[stat(desc = "Tasks BPF ran itself while user space was stuck")]
    pub nr_fallback_dispatches: u64,
    /// Wake-ups BPF sent straight to an idle CPU.
    #[stat(desc = "Wake-ups BPF sent straight to an idle CPU (direct_idle)")]
    pub nr_direct_dispatches: u64,
    /// Tasks preempted by the scheduler's own thread and put back by BPF.
    #[stat(desc = "Tasks the scheduler's own wake-up preempted, put back by BPF")]
    pub nr_displaced_dispatches: u64,
    /// Tasks sent back through enqueue when a higher sched class took their CPU.
    #[stat(
        desc = "Tasks placed again, or decisions redirected, because a higher sched class took their CPU"
    )]
    pub nr_reenqueued: u64,
    /// Dispatches placed in the vtime-ordered shared queue.
    #[stat(desc = "Dispatches placed in the vtime-ordered shared queue")]
    pub nr_vtime_dispatches: u64,
    /// Memory-management kernel threads BPF ran itself.
    #[stat(desc = "kswapd, kcompactd and khugepaged runs BPF dispatched itself")]
    pub nr_mm_kthread_dispatches: u64,
    /// Tasks without a task context that BPF ran itself.
    #[stat(desc = "Tasks without a task context that BPF ran itself")]
    pub nr_untracked_dispatches: u64,
    /// Displaced tasks BPF's timer moved to their CPU, whose resume queue went unserved.
    #[stat(
        desc = "Displaced tasks the stall timer moved to their CPU because it did not look in time"
    )]
    pub nr_resume_rescues: u64,
    /// Tasks BPF's timer moved from a shared queue to their CPU after a long wait.
    #[stat(
        desc = "Tasks the stall timer moved from a shared queue to their CPU after a long wait"
    )]
    pub nr_shared_rescues: u64,
    /// Stall-guard entries lost from its full queue.
    #[stat(desc = "Stall-guard entries evicted while their task still waited")]
    pub nr_pending_lost: u64,
    /// Tasks handed to user space and not yet decided on.
    #[stat(desc = "Tasks handed to user space and not yet decided on")]
    pub nr_outstanding: i64,
    /// 1 while BPF runs the tasks itself (user space stuck), else 0.
    #[stat(desc = "1 while BPF runs the tasks itself because user space is stuck")]
    pub fallback: u64,
    /// Times the scheduler was attached again at the kernel's request (CPU hotplug).
    #[stat(desc = "Restarts the kernel asked for (CPU hotplug)")]
    pub nr_restarts: u64,
    /// The policy's own counters, by name ([`Policy::metrics`](crate::Policy::metrics)).
    #[stat(desc = "The policy's own counters")]
    pub policy: BTreeMap<String, u64>,
}

impl From<Stats> for Metrics {
    fn from(s: Stats) -> Self {
        Self {
            nr_online_cpus: s.nr_online_cpus,
            nr_running: s.nr_running,
            nr_queued: s.nr_queued,
            nr_scheduled: s.nr_scheduled,
            nr_user_dispatches: s.nr_user_dispatches,
            nr_kernel_dispatches: s.nr_kernel_dispatches,
            nr_cancel_dispatches: s.nr_cancel_dispatches,
            nr_bounce_dispatches: s.nr_bounce_dispatches,
            nr_failed_dispatches: s.nr_failed_dispatches,
            nr_sched_congested: s.nr_sched_congested,
            nr_queued_events: s.nr_queued_events,
            nr_exit_events: s.nr_exit_events,
            nr_dispatch_records: s.nr_dispatch_records,
            nr_stalls: s.nr_stalls,
            nr_fallback_dispatches: s.nr_fallback_dispatches,
            nr_direct_dispatches: s.nr_direct_dispatches,
            nr_displaced_dispatches: s.nr_displaced_dispatches,
            nr_reenqueued: s.nr_reenqueued,
            nr_vtime_dispatches: s.nr_vtime_dispatches,
            nr_mm_kthread_dispatches: s.nr_mm_kthread_dispatches,
            nr_untracked_dispatches: s.nr_untracked_dispatches,
            nr_resume_rescues: s.nr_resume_rescues,
            nr_shared_rescues: s.nr_shared_rescues,
            nr_pending_lost: s.nr_pending_lost,
            nr_outstanding: s.nr_outstanding,
            fallback: u64::from(s.fallback),
            nr_restarts: 0,
            policy: BTreeMap::new(),
        }
    }
}

impl std::fmt::Display for Metrics {
    /// One line for people: the counters that move, then the policy's own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} user {} kernel {} direct {} cancel {} bounce {} fail {} congested {} \
             stalls {}{} restarts {}",
            self.nr_running,
            self.nr_user_dispatches,
            self.nr_kernel_dispatches,
            self.nr_direct_dispatches,
            self.nr_cancel_dispatches,
            self.nr_bounce_dispatches,
            self.nr_failed_dispatches,
            self.nr_sched_congested,
            self.nr_stalls,
            if self.fallback != 0 { " FALLBACK" } else { "" },
            self.nr_restarts,
        )?;
        for (name, value) in &self.policy {
            write!(f, " {name} {value}")?;
        }
        Ok(())
    }
}

fn stats_error<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Stats {
        context,
        message: format!("{e:#}"),
    }
}

/// Write the description of every statistics field (`--help-stats`).
pub fn describe(w: &mut impl std::io::Write) -> Result<(), Error> {
    StatsServerData::<(), ()>::new()
        .add_meta(Metrics::meta())
        .describe_meta(w, None)
        .map_err(stats_error("describing the statistics"))
}

/// Read the statistics of the scheduler serving at `path` (default [`STATS_SOCKET`]) every
/// `interval`, handing each reading to `f` until `f` returns false (`--monitor SECS`).
///
/// Errors: [`Error::Stats`] when no scheduler serves there (with what to do), or when the
/// connection breaks (the scheduler stopped).
pub fn monitor(
    path: Option<&Path>,
    interval: Duration,
    mut f: impl FnMut(&Metrics) -> bool,
) -> Result<(), Error> {
    let path = path.map_or_else(|| PathBuf::from(STATS_SOCKET), Path::to_path_buf);
    let mut client = StatsClient::new()
        .set_path(&path)
        .connect(Some(5000))
        .map_err(|e| Error::Stats {
            context: "connecting to the statistics socket",
            message: format!(
                "{}: {e:#}; is a scheduler running (it serves its statistics there)?",
                path.display()
            ),
        })?;
    loop {
        let metrics: Metrics = client
            .request("stats", vec![])
            .map_err(stats_error("reading the statistics"))?;
        if !f(&metrics) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

/// The serving side, run by [`Runner`](crate::Runner): the socket's thread asks for a reading
/// through a channel (and wakes the loop with `poke`), and the scheduling loop answers between
/// two passes, so the counters are read where the scheduler lives.
pub(crate) struct Server {
    /// Keeps the socket served; dropping it stops the server.
    _server: StatsServer<(), Metrics>,
    answers: crossbeam_channel::Sender<Metrics>,
    requests: crossbeam_channel::Receiver<()>,
}

impl Server {
    /// Serve at `path` (created, replacing a stale socket).
    pub(crate) fn launch(path: &Path, poke: impl Fn() + Send + 'static) -> Result<Self, Error> {
        let data = StatsServerData::<(), Metrics>::new()
            .add_meta(Metrics::meta())
            .add_stats(
                "top",
                Box::new(move |_args, (ask, answer)| {
                    ask.send(())?;
                    poke();
                    let reading = answer.recv_timeout(Duration::from_secs(5))?;
                    reading.to_json()
                }),
            );
        let server = StatsServer::new(data)
            .set_path(path)
            .launch()
            .map_err(stats_error("serving the statistics"))?;
        let (answers, requests) = server.channels();
        Ok(Self {
            _server: server,
            answers,
            requests,
        })
    }

    /// Answer every pending request with `read()`.
    pub(crate) fn serve(&self, mut read: impl FnMut() -> Metrics) {
        while self.requests.try_recv().is_ok() {
            // The asking thread gave up (timed out) if this fails: nothing to do.
            let _ = self.answers.send(read());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_described() {
        let mut out = Vec::new();
        describe(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for field in [
            "nr_user_dispatches",
            "nr_stalls",
            "fallback",
            "nr_restarts",
            "policy",
        ] {
            assert!(text.contains(field), "{field} missing from:\n{text}");
        }
    }

    #[test]
    fn a_reading_serialises_as_its_fields() {
        let mut m = Metrics::from(Stats {
            nr_user_dispatches: 7,
            fallback: true,
            ..Stats::default()
        });
        m.policy.insert("queued_fifo".into(), 3);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["nr_user_dispatches"], 7);
        assert_eq!(v["fallback"], 1);
        assert_eq!(v["policy"]["queued_fifo"], 3);
        let back: Metrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        assert!(m.to_string().contains("FALLBACK"));
        assert!(m.to_string().ends_with("queued_fifo 3"));
    }
}
