//! [`Runner`]: the loop every scheduler needs around its policy.
//!
//! A scheduler process attaches, runs its policy until it is told to stop or the kernel ends
//! the scheduler, prints why it stopped, and attaches again when the kernel asks it to (CPU
//! hotplug). [`Runner::run`] does all of that; the policy only implements [`Policy`].
//!
//! ```no_run
//! use scx_userland::{Backend, BpfScheduler, DispatchedTask, Error, Policy, Runner};
//!
//! struct Fifo;
//!
//! impl Policy for Fifo {
//!     fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
//!         while let Some(task) = bpf.dequeue_task()? {
//!             if !task.is_exiting() {
//!                 bpf.dispatch_task(&DispatchedTask::new(&task))?;
//!             }
//!         }
//!         bpf.update_tasks(Some(0), Some(0)) // sleeps until more tasks come
//!     }
//! }
//!
//! # fn main() -> Result<(), Error> {
//! let report = Runner::new(BpfScheduler::builder().name("fifo")).run(&mut Fifo)?;
//! println!("{report}");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::stats::{Metrics, Server, STATS_SOCKET};
use crate::{Backend, BpfScheduler, BpfSchedulerBuilder, Error, ExitReport, Waker};

/// A scheduling policy, driven by a [`Runner`] (or by any other driver of a [`Backend`]).
///
/// Its methods are generic over the [`Backend`], so the same policy source runs on the real
/// kernel ([`BpfScheduler`]) and on other backends.
pub trait Policy {
    /// Take the waiting tasks, decide, dispatch, and return. Called again and again while the
    /// scheduler is attached; end with [`Backend::update_tasks`] (or
    /// [`notify_complete`](Backend::notify_complete)), which sleeps when nothing is left to
    /// do, so the loop never spins.
    ///
    /// An error ends [`Runner::run`] with that error (the scheduler is detached first).
    fn schedule<B: Backend>(&mut self, sched: &mut B) -> Result<(), Error>;

    /// Called after every attach, the first and each restart. Tasks the policy still holds
    /// from before a restart belong to the old attachment: forget them here.
    fn attached<B: Backend>(&mut self, _sched: &mut B) {}

    /// Called every [`Runner::tick_interval`] while attached, e.g. to print statistics.
    fn tick<B: Backend>(&mut self, _sched: &B) {}

    /// Called after every detach with the kernel's report, before a restart or the end.
    fn detached(&mut self, _report: &ExitReport) {}

    /// The policy's own counters, served beside the framework's (see [`crate::stats`]):
    /// insert them by name. Called when a statistics client asks.
    fn metrics(&self, _out: &mut BTreeMap<String, u64>) {}
}

/// Asks a running [`Runner`] to stop, from any thread (a signal-watching thread, a timer,
/// a test). Cloning it is cheap.
#[derive(Clone, Debug, Default)]
pub struct Stopper(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Stopper {
    /// Stop: the runner detaches the scheduler and returns its report. Wakes the scheduler if
    /// it sleeps waiting for tasks.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        if let Some(waker) = self.lock_waker().as_ref() {
            waker.wake();
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Wake the scheduler if it sleeps waiting for tasks, without stopping it.
    fn poke(&self) {
        if let Some(waker) = self.lock_waker().as_ref() {
            waker.wake();
        }
    }

    fn set_waker(&self, waker: Option<Waker>) {
        *self.lock_waker() = waker;
    }

    fn lock_waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        // A panic while holding this lock cannot leave the Option half-written.
        self.0.waker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Attaches a [`BpfScheduler`], runs a [`Policy`] until stopped, and handles the scheduler's
/// lifecycle: a kernel exit ends the loop (never as an error), a restart the kernel asks for
/// (CPU hotplug: [`ExitReport::should_restart`]) attaches again, and the final report is
/// returned.
///
/// By default it also owns SIGINT and SIGTERM (see [`handle_signals`](Self::handle_signals))
/// and serves statistics (see [`stats_server`](Self::stats_server)).
#[derive(Debug)]
pub struct Runner {
    builder: BpfSchedulerBuilder,
    stopper: Stopper,
    signals: bool,
    tick: Option<Duration>,
    stats_path: Option<PathBuf>,
    boost: bool,
}

impl Runner {
    /// A runner that attaches schedulers built by `builder`.
    pub fn new(builder: BpfSchedulerBuilder) -> Self {
        Self {
            builder,
            stopper: Stopper::default(),
            signals: true,
            tick: Some(Duration::from_secs(1)),
            stats_path: Some(PathBuf::from(STATS_SOCKET)),
            boost: true,
        }
    }

    /// Whether the calling thread runs at nice -20 while it detaches and attaches (default:
    /// yes); its own priority is restored right after.
    ///
    /// In between, no sched_ext scheduler is attached, and the thread competes under the
    /// kernel's default scheduler with the load it was scheduling: at nice 0 beside two CPU
    /// hogs it gets a fraction of a CPU for the BPF verifier, which makes a restart (CPU
    /// hotplug) take several times longer. Raising the priority needs `CAP_SYS_NICE` (root
    /// has it); without it the runner goes on at the thread's own priority. While attached,
    /// the scheduling thread is run ahead of other tasks by BPF whatever its nice value.
    pub fn boost_while_attaching(mut self, on: bool) -> Self {
        self.boost = on;
        self
    }

    /// Where to serve statistics through `scx_stats` while running: `Some(path)` (default:
    /// [`STATS_SOCKET`], where sched_ext tools look), or `None` for no server. The counters
    /// are read by the scheduling loop between two passes, so a client waits at most for one
    /// pass (an idle scheduler is woken to answer).
    pub fn stats_server(mut self, path: Option<PathBuf>) -> Self {
        self.stats_path = path;
        self
    }

    /// Whether SIGINT and SIGTERM stop the runner (default: yes).
    ///
    /// No signal handler is installed: [`run`](Self::run) blocks both signals in the calling
    /// thread (threads it creates afterwards inherit that) and a thread of its own waits for
    /// them with `sigwait`, then calls [`Stopper::stop`]. Call `run` from `main` before
    /// starting other threads, or block the two signals in those threads too: a thread that
    /// does not block them would take the default action (end the process without the
    /// report). The mask is restored when `run` returns. With `false`, stop the runner
    /// yourself through [`stopper`](Self::stopper).
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// How often [`Policy::tick`] is called (`None`: never). Default: every second.
    pub fn tick_interval(mut self, every: Option<Duration>) -> Self {
        self.tick = every;
        self
    }

    /// A handle that stops the runner from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Attach and run `policy` until stopped or until the kernel ends the scheduler without
    /// asking for a restart. Returns the last [`ExitReport`]: an error exit of the kernel
    /// (`report.kind.is_error()`) is a report, not an `Err`.
    ///
    /// Errors: what [`BpfSchedulerBuilder::build`] returns (the first attach, or a restart),
    /// an error from [`Policy::schedule`], [`Error::Io`] when the signals cannot be set up,
    /// or [`Error::Stats`] when the statistics socket cannot be served.
    pub fn run(&self, policy: &mut impl Policy) -> Result<ExitReport, Error> {
        let _signals = if self.signals {
            Some(SignalGuard::install(&self.stopper)?)
        } else {
            None
        };
        // Attach first: an error (no root, no sched_ext, another scheduler) comes before the
        // statistics socket is touched, which belongs to whichever scheduler is attached.
        let mut bpf = self.boosted(|| self.builder.build())?;
        let server = match &self.stats_path {
            Some(path) => {
                let stopper = self.stopper.clone();
                Some(Server::launch(path, move || stopper.poke())?)
            }
            None => None,
        };
        let mut restarts = 0;
        loop {
            let report = self.run_attached(bpf, policy, server.as_ref(), restarts)?;
            policy.detached(&report);
            if !report.should_restart() || self.stopper.is_stopped() {
                return Ok(report);
            }
            restarts += 1;
            bpf = self.boosted(|| self.builder.build())?;
        }
    }

    fn run_attached(
        &self,
        mut bpf: BpfScheduler<'_>,
        policy: &mut impl Policy,
        server: Option<&Server>,
        restarts: u64,
    ) -> Result<ExitReport, Error> {
        self.stopper.set_waker(Some(bpf.waker()));
        policy.attached(&mut bpf);
        let mut last_tick = Instant::now();
        let result = loop {
            if self.stopper.is_stopped() || bpf.exited() {
                break Ok(());
            }
            if let Err(e) = policy.schedule(&mut bpf) {
                break Err(e);
            }
            if let Some(server) = server {
                server.serve(|| {
                    let mut m = Metrics::from(bpf.stats());
                    m.nr_restarts = restarts;
                    policy.metrics(&mut m.policy);
                    m
                });
            }
            if let Some(every) = self.tick {
                if last_tick.elapsed() >= every {
                    last_tick = Instant::now();
                    policy.tick(&bpf);
                }
            }
        };
        self.stopper.set_waker(None);
        // Detach in both cases (dropping `bpf` on the error path does it too).
        let report = self.boosted(|| bpf.shutdown_and_report())?;
        result.map(|()| report)
    }

    /// Run `f` at nice -20 when [`boost_while_attaching`](Self::boost_while_attaching) is on.
    fn boosted<T>(&self, f: impl FnOnce() -> T) -> T {
        let _boost = self.boost.then(NiceBoost::raise);
        f()
    }
}

/// The calling thread at nice -20 until dropped, then back at its own nice value.
struct NiceBoost {
    tid: libc::id_t,
    old: libc::c_int,
}

impl NiceBoost {
    /// `None` when the priority cannot be read or raised (no `CAP_SYS_NICE`).
    fn raise() -> Option<Self> {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // getpriority may return -1 as a value: tell it from an error by errno.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: plain syscall on this thread's id; on Linux PRIO_PROCESS with a thread id
        // addresses that one thread.
        let old = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        // SAFETY: as above.
        if old == -1 && unsafe { *libc::__errno_location() } != 0 {
            return None;
        }
        // SAFETY: as above; only this thread's nice value changes.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -20) } != 0 {
            return None;
        }
        Some(Self { tid, old })
    }
}

impl Drop for NiceBoost {
    fn drop(&mut self) {
        // SAFETY: restores this thread's own nice value (lowering priority never fails for
        // lack of privilege; an error leaves -20, which is harmless while attached).
        unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid, self.old) };
    }
}

/// The stopper the signal thread serves (one thread per process, started once).
static SIGNAL_TARGET: Mutex<Option<Stopper>> = Mutex::new(None);
static SIGNAL_THREAD: OnceLock<Result<(), i32>> = OnceLock::new();
/// The signal thread's tid (tests direct signals at it).
#[cfg(test)]
static SIGNAL_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// SIGINT and SIGTERM blocked in this thread and routed to a stopper, until dropped.
struct SignalGuard {
    old_mask: libc::sigset_t,
}

fn interrupt_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise and fill it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

impl SignalGuard {
    fn install(stopper: &Stopper) -> Result<Self, Error> {
        let set = interrupt_set();
        // SAFETY: sigset_t is plain data, filled by pthread_sigmask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to initialised sets; changes only this thread's mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
        if rc != 0 {
            return Err(Error::Io {
                context: "blocking SIGINT and SIGTERM",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        *SIGNAL_TARGET.lock().unwrap_or_else(|e| e.into_inner()) = Some(stopper.clone());
        let started = SIGNAL_THREAD.get_or_init(|| {
            std::thread::Builder::new()
                .name("scx-signals".into())
                .spawn(|| loop {
                    #[cfg(test)]
                    // SAFETY: gettid has no preconditions.
                    SIGNAL_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                    let set = interrupt_set();
                    let mut sig = 0;
                    // SAFETY: a valid set and out-pointer; the signals are blocked in this
                    // thread (inherited from the spawning thread), as sigwait requires.
                    if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                        if let Some(s) = SIGNAL_TARGET
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .as_ref()
                        {
                            s.stop();
                        }
                    }
                })
                .map(|_| ())
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EAGAIN))
        });
        if let Err(errno) = *started {
            return Err(Error::Io {
                context: "starting the signal thread",
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        Ok(Self { old_mask })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restores this thread's mask saved by `install`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        // SAFETY: this thread's own priority; errno is not needed for values above -1.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn nice_boost_raises_then_restores_this_thread_only() {
        let before = own_nice();
        let other = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            own_nice()
        });
        match NiceBoost::raise() {
            Some(boost) => {
                assert_eq!(own_nice(), -20);
                assert_eq!(other.join().unwrap(), before, "another thread was changed");
                drop(boost);
            }
            // Without CAP_SYS_NICE nothing changes.
            None => assert_eq!(own_nice(), before),
        }
        assert_eq!(own_nice(), before);
    }

    #[test]
    fn stopper_is_shared_and_sticky() {
        let runner = Runner::new(BpfScheduler::builder());
        let s = runner.stopper();
        assert!(!runner.stopper.is_stopped());
        s.stop();
        assert!(runner.stopper.is_stopped());
        s.stop();
        assert!(s.is_stopped());
    }

    #[test]
    fn sigterm_reaches_the_stopper_not_the_default_action() {
        let stopper = Stopper::default();
        let guard = SignalGuard::install(&stopper).expect("signals");
        let t0 = Instant::now();
        while SIGNAL_TID.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Aimed at the signal thread: other test threads do not block SIGTERM.
        // SAFETY: tgkill to a thread of this process, which blocks SIGTERM and sigwaits for it.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                SIGNAL_TID.load(Ordering::SeqCst),
                libc::SIGTERM,
            )
        };
        while !stopper.is_stopped() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
        assert!(stopper.is_stopped(), "SIGTERM did not reach the stopper");
    }
}
