//! One test per rule of the BPF component (main.bpf.c) the simulator models, each with a
//! small policy that exercises it.

mod common;

use common::*;
use scx_userland::{Backend, Dispatch, DispatchedTask, Error, Policy, QueuedTask, RL_CPU_ANY};
use scx_userland_sim::{simulate, Op, Scenario, SeedFifo, SimError, TaskSpec};

/// The ticker to `RL_CPU_ANY` (FIFO queue) with `preempt`; others to the vtime queue in
/// turn.
fn two_queues(preempt: bool) -> impl FnMut(&QueuedTask) -> Option<Dispatch> {
    let mut turn = 0;
    move |t| {
        let mut d = Dispatch::new(t);
        d.cpu = RL_CPU_ANY;
        if t.comm_str() == "tick" {
            d.preempt = preempt;
        } else {
            turn += 1;
            d.vtime = turn;
        }
        Some(d)
    }
}

#[test]
fn direct_idle_keeps_wakeups_on_idle_cpus_out_of_user_space() {
    let mut s = scenario(2, 200, vec![ticker("tick", 50, 1000)]);
    s.sched.direct_idle = true;
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    assert!(r.stats.nr_direct_dispatches >= 190, "{r}");
    let wakeups_seen = spy
        .seen
        .borrow()
        .queued
        .iter()
        .filter(|t| t.is_wakeup())
        .count();
    assert_eq!(wakeups_seen, 0);

    s.sched.direct_idle = false;
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    assert_eq!(r.stats.nr_direct_dispatches, 0);
    let seen = spy.seen.borrow();
    let wakeups: Vec<_> = seen.queued.iter().filter(|t| t.is_wakeup()).collect();
    assert!(wakeups.len() >= 190);
    // The CPU select_cpu found idle travels with the task.
    assert!(wakeups.iter().all(|t| t.idle_cpu()));
}

#[test]
fn fifo_queue_is_served_before_the_vtime_queue() {
    // One CPU, three hogs waiting in the vtime queue, and a task waking every 2 ms.
    let s = scenario(1, 300, vec![hog("hog").count(3), ticker("tick", 50, 2000)]);
    // The wake-up in the FIFO queue (no preemption): taken at the next slice end.
    let r = simulate(&s, &mut Decide(two_queues(false))).unwrap();
    assert!(r.group("tick").wake_wait.max_ns <= 5 * MS + 200 * US, "{r}");
    // The same wake-up in the vtime queue behind the hogs: waits for several slices.
    let mut turn = 0;
    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            let mut d = Dispatch::new(t);
            d.cpu = RL_CPU_ANY;
            turn += 1;
            d.vtime = turn;
            Some(d)
        }),
    )
    .unwrap();
    assert!(r.group("tick").wake_wait.p50_ns >= 9 * MS, "{r}");
}

#[test]
fn vtime_queue_is_served_at_least_every_20ms() {
    // One CPU: three hogs always in the FIFO queue, one hog in the vtime queue.
    let s = scenario(1, 1000, vec![hog("fifo").count(3), hog("vt")]);
    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            let mut d = Dispatch::new(t);
            d.cpu = RL_CPU_ANY;
            if t.comm_str() == "vt" {
                d.vtime = 1;
            }
            Some(d)
        }),
    )
    .unwrap();
    let vt = r.task("vt");
    // Without aging it would never run (the FIFO queue is never empty).
    assert!(vt.runtime_ns > 100 * MS, "{r}");
    // Served once its queue has waited 20 ms: at the next slice end after that.
    assert!(vt.max_starvation_ns < 20 * MS + 6 * MS, "{r}");
    assert!(vt.max_starvation_ns > 15 * MS, "{r}");
}

#[test]
fn rl_cpu_any_with_preempt_makes_room_on_the_longest_running_cpu() {
    // The ticker may only use CPU 1: a drain on CPU 0 cannot take it there.
    let s = scenario(
        2,
        300,
        vec![hog("hog").count(2), ticker("tick", 50, 1000).cpus(&[1])],
    );
    // Without preempt: a wake-up waits for a slice to end.
    let r = simulate(&s, &mut Decide(two_queues(false))).unwrap();
    let slow = r.group("tick").wake_wait;
    assert!(slow.p50_ns > MS, "{r}");
    // With preempt: make_room preempts the CPU whose hog ran longest (>= 200 us) at the
    // drain, so the wake-up does not wait for the other CPU's slice too.
    let r = simulate(&s, &mut Decide(two_queues(true))).unwrap();
    let fast = r.group("tick").wake_wait;
    assert!(fast.mean_ns < slow.mean_ns, "{r}");
}

#[test]
fn make_room_takes_an_idle_cpu_first() {
    // Three CPUs, one hog: a preempting RL_CPU_ANY wake-up never preempts the hog.
    let mut s = scenario(3, 200, vec![hog("hog"), ticker("tick", 50, 1000)]);
    s.sched.direct_idle = false;
    let r = simulate(&s, &mut Decide(two_queues(true))).unwrap();
    assert!(r.group("tick").wake_wait.p99_ns < 100 * US, "{r}");
    // The hog was never cut short: it ran its slices out (or kept its CPU).
    assert!(r.group("hog").cpu_share > 0.98, "{r}");
}

/// The hogs to the vtime queue; the others to the FIFO queue, the ticker at its head if
/// `head`.
fn head_policy(head: bool) -> Decide<impl FnMut(&QueuedTask) -> Option<Dispatch>> {
    let mut turn = 0;
    Decide(move |t: &QueuedTask| {
        let mut d = Dispatch::new(t);
        d.cpu = RL_CPU_ANY;
        if t.comm_str().starts_with("hog") {
            turn += 1;
            d.vtime = turn;
        }
        d.head = head && t.comm_str() == "tick";
        Some(d)
    })
}

#[test]
fn head_puts_a_task_first_in_the_fifo_queue() {
    // One CPU: hogs behind, and periodic workers that keep the FIFO queue busy, but not
    // always.
    let s = scenario(
        1,
        500,
        vec![
            hog("hog").count(2),
            ticker("worker", 900, 3000).count(3),
            ticker("tick", 50, 2000),
        ],
    );
    let tail = simulate(&s, &mut head_policy(false)).unwrap();
    let head = simulate(&s, &mut head_policy(true)).unwrap();
    let (t, h) = (tail.group("tick").wake_wait, head.group("tick").wake_wait);
    assert!(h.mean_ns < t.mean_ns, "tail: {tail}\nhead: {head}");
}

#[test]
fn head_insertions_stop_while_the_fifo_queue_never_empties() {
    // One CPU, three hogs with 1 ms slices, through the FIFO queue: after 20 ms without
    // seeing it empty, BPF queues the "head" ticker at the tail, so the hogs at the tail
    // cannot starve. (With 5 ms slices the hogs the ticker's wake-ups displace spend most
    // of their time in the CPU's resume queue, and the FIFO queue is often empty.)
    let s = scenario(1, 300, vec![hog("hog").count(3), ticker("tick", 50, 2000)]);
    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            let mut d = Dispatch::new(t);
            d.cpu = RL_CPU_ANY;
            d.head = t.comm_str() == "tick";
            if t.comm_str().starts_with("hog") {
                d.slice_ns = MS;
            }
            Some(d)
        }),
    )
    .unwrap();
    // Behind a hog's slice (at the head it would wait for the scheduler only: 4.5 us).
    assert!(r.group("tick").wake_wait.p50_ns >= 900 * US, "{r}");
    assert!(r.group("hog").max_starvation_ns < 3 * MS, "{r}");
}

#[test]
fn bounce_sends_a_task_to_a_cpu_it_may_use() {
    // Pinned to CPU 1; the policy insists on CPU 0, then on a stale cpumask_cnt.
    let s = scenario(2, 100, vec![ticker("pinned", 50, 1000).cpus(&[1])]);
    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            Some(Dispatch {
                cpu: 0,
                ..Dispatch::new(t)
            })
        }),
    )
    .unwrap();
    assert!(r.stats.nr_bounce_dispatches >= 90, "{r}");
    assert_eq!(r.task("pinned").cpus_used, vec![1]);
    assert!(r.task("pinned").bursts >= 90, "{r}");

    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            Some(Dispatch {
                cpumask_cnt: t.cpumask_cnt + 1,
                ..Dispatch::new(t)
            })
        }),
    )
    .unwrap();
    assert_eq!(
        r.stats.nr_bounce_dispatches, r.stats.nr_user_dispatches,
        "{r}"
    );
    assert!(r.task("pinned").bursts >= 90, "{r}");
}

/// Dispatches every task twice, and a pid that does not exist once at attach.
struct Careless;

impl Policy for Careless {
    fn attached<B: Backend>(&mut self, bpf: &mut B) {
        let ghost = DispatchedTask {
            pid: 999_999,
            cpu: 0,
            cpumask_cnt: 0,
            slice_ns: 0,
        };
        bpf.dispatch_task(&ghost).unwrap();
    }
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        while let Some(t) = bpf.dequeue_task()? {
            if !t.is_exiting() {
                bpf.dispatch_task(&DispatchedTask::new(&t))?;
                bpf.dispatch_task(&DispatchedTask::new(&t))?;
            }
        }
        bpf.update_tasks(Some(0), Some(0))
    }
}

#[test]
fn cancel_drops_unknown_pids_and_double_dispatches() {
    let s = scenario(2, 100, vec![hog("hog").count(3), ticker("tick", 50, 1000)]);
    let r = simulate(&s, &mut Careless).unwrap();
    assert!(r.stats.nr_user_dispatches > 50, "{r}");
    // Every second dispatch of a task, and the ghost.
    assert_eq!(
        r.stats.nr_cancel_dispatches,
        r.stats.nr_user_dispatches + 1,
        "{r}"
    );
    assert_eq!(
        r.stats.nr_dispatch_records,
        2 * r.stats.nr_user_dispatches + 1
    );
}

#[test]
fn invalid_pids_and_cpus_are_errors_like_on_the_kernel() {
    let s = scenario(2, 10, vec![ticker("tick", 50, 1000)]);
    let bad_cpu = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            Some(Dispatch {
                cpu: 7,
                ..Dispatch::new(t)
            })
        }),
    );
    assert!(matches!(
        bad_cpu,
        Err(SimError::Policy(Error::InvalidCpu { cpu: 7, .. }))
    ));
    let bad_pid = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            Some(Dispatch {
                pid: 0,
                ..Dispatch::new(t)
            })
        }),
    );
    assert!(matches!(
        bad_pid,
        Err(SimError::Policy(Error::InvalidPid(0)))
    ));
}

#[test]
fn slices_default_at_zero_and_are_clamped_to_one_second() {
    // One CPU, two hogs taking turns: each waits one slice of the other.
    let s = |ms| scenario(1, ms, vec![hog("hog").count(2)]);
    let with_slice = |slice_ns: u64| {
        Decide(move |t: &QueuedTask| {
            Some(Dispatch {
                cpu: RL_CPU_ANY,
                slice_ns,
                ..Dispatch::new(t)
            })
        })
    };
    let r = simulate(&s(200), &mut with_slice(0)).unwrap();
    assert!(
        (4_900 * US..=5_100 * US).contains(&r.group("hog").wait.max_ns),
        "{r}"
    );
    let r = simulate(&s(200), &mut with_slice(2 * MS)).unwrap();
    assert!(
        (1_900 * US..=2_100 * US).contains(&r.group("hog").wait.max_ns),
        "{r}"
    );
    // 5 s asked for: 1 s given.
    let r = simulate(&s(4000), &mut with_slice(5_000 * MS)).unwrap();
    assert!(
        (990 * MS..=1_010 * MS).contains(&r.group("hog").wait.max_ns),
        "{r}"
    );
    // The scenario's default slice (builder slice_us) applies to 0.
    let mut s2 = s(200);
    s2.sched.slice_us = 3000;
    let r = simulate(&s2, &mut with_slice(0)).unwrap();
    assert!(
        (2_900 * US..=3_100 * US).contains(&r.group("hog").wait.max_ns),
        "{r}"
    );
}

/// Takes every task and decides nothing.
struct Silent;

impl Policy for Silent {
    fn schedule<B: Backend>(&mut self, bpf: &mut B) -> Result<(), Error> {
        while bpf.dequeue_task()?.is_some() {}
        bpf.update_tasks(Some(0), Some(0))
    }
}

#[test]
fn stall_guard_runs_waiting_tasks_when_user_space_stops_deciding() {
    let s = scenario(2, 1000, vec![hog("hog").count(3), ticker("tick", 50, 1000)]);
    let r = simulate(&s, &mut Silent).unwrap();
    assert_eq!(r.stats.nr_stalls, 1, "{r}");
    assert_eq!(r.stats.fallback, 1, "{r}");
    assert!(r.stats.nr_fallback_dispatches > 100, "{r}");
    // stall_timeout (100 ms) plus one 20 ms check, and the tasks ran after that.
    for t in &r.tasks {
        assert!(t.max_starvation_ns < 130 * MS, "{}: {r}", t.name);
        assert!(t.runtime_ns > 0, "{}: {r}", t.name);
    }
}

#[test]
fn stall_guard_steps_in_while_the_scheduler_is_stopped_and_steps_out_after() {
    // The real FIFO policy, SIGSTOPped from 100 ms to 400 ms.
    let mut s = scenario(2, 600, vec![hog("hog").count(3), ticker("tick", 50, 1000)]);
    s.sched.stopped_ms = vec![[100, 400]];
    let r = simulate(&s, &mut scx_fifo::Fifo::new()).unwrap();
    assert_eq!(r.stats.nr_stalls, 1, "{r}");
    assert!(r.stats.nr_fallback_dispatches > 0, "{r}");
    assert_eq!(r.stats.fallback, 0, "user space decides again: {r}");
    assert!(r.group("tick").max_starvation_ns < 130 * MS, "{r}");
    assert!(r.scheduler.wait.max_ns >= 290 * MS, "{r}");
}

/// A task the scheduler's wake-up displaced, not cut short, waits in its CPU's resume queue
/// behind the tasks the decisions just carried out put in the FIFO queue (for at most
/// RESUME_MAX_WAIT_NS, counted from this displacement). One CPU: a hog, and a ticker whose
/// wake-ups go to the FIFO queue (the hog, once its slice is used up, to the vtime queue). A
/// wake-up wakes the scheduler, which preempts the hog: BPF puts the hog in the CPU's resume
/// queue with what is left of its slice. When the scheduler sleeps, the CPU's local queue is
/// empty, so it goes through ops.dispatch, carries out the decision for the ticker and runs
/// the ticker; the hog resumes after it. With the hog resuming first the ticker waited for
/// the rest of the hog's slice: 60 of 100 bursts, 5 ms (p99).
#[test]
fn a_task_the_scheduler_displaced_resumes_after_the_tasks_it_just_dispatched() {
    let s = scenario(1, 300, vec![hog("hog"), ticker("tick", 50, 3000)]);
    let r = simulate(&s, &mut Decide(two_queues(false))).unwrap();
    // 50.
    assert!(r.stats.nr_displaced_dispatches >= 40, "{r}");
    // 100 bursts; the ticker waits for the scheduler only (4.5 us, p99).
    assert!(r.group("tick").bursts >= 95, "{r}");
    assert!(r.group("tick").wake_wait.p99_ns < 50 * US, "{r}");
    // The hog still has the CPU whenever the ticker does not.
    let ticker = r.task("tick").runtime_ns;
    assert!(
        r.task("hog").runtime_ns * 10 > (300 * MS - ticker) * 8,
        "{r}"
    );
}

/// A task displaced again waits anew: `resume_ts` is set at every displacement into an empty
/// resume queue, as the hog's is each time here. One CPU, a hog and a ticker waking every
/// 1 ms, as above: the hog resumes after the ticker and is displaced again about 950 us later, each time not overdue, so the ticker runs first every
/// time: 200 of 200 bursts, 4.5 us (p99). (When the wait counted from the hog's first
/// displacement in its slice, the hog was overdue at the next one and resumed first: 70
/// bursts, 3.1 ms (p50); with the hog always resuming first, 40 bursts, 4.4 ms.)
#[test]
fn a_task_displaced_again_waits_anew_behind_the_wake_up() {
    let s = scenario(1, 200, vec![hog("hog"), ticker("tick", 50, 1000)]);
    let r = simulate(&s, &mut Decide(two_queues(false))).unwrap();
    // 166.
    assert!(r.stats.nr_displaced_dispatches >= 150, "{r}");
    assert!(r.group("tick").bursts >= 190, "{r}");
    assert!(r.group("tick").wake_wait.p99_ns < 50 * US, "{r}");
}

/// Every task to `RL_CPU_ANY` (the FIFO queue).
fn any_cpu(t: &QueuedTask) -> Option<Dispatch> {
    let mut d = Dispatch::new(t);
    d.cpu = RL_CPU_ANY;
    Some(d)
}

/// An overdue displaced task resumes even in an `ops.dispatch` call that carries out
/// decisions, ahead of those that went to the FIFO queue. One CPU: when a hog's slice ends,
/// the CPU resumes (or takes) another task, and the record of the hog wakes the scheduler,
/// which displaces that task 0.5 us into its run: cut short, it is overdue at once, and
/// resumes ahead of the hog's decision. Without the rule it waits behind the hog, which gets
/// the CPU back every time: with a hog and a ticker the ticker runs 0 bursts (19 us) in
/// 200 ms; with two hogs the second runs 19 us.
#[test]
fn an_overdue_displaced_task_resumes_ahead_of_the_decisions_of_the_same_call() {
    let s = scenario(1, 200, vec![hog("hog"), ticker("tick", 50, 1000)]);
    let r = simulate(&s, &mut Decide(any_cpu)).unwrap();
    // 195 bursts, 9.75 ms.
    assert!(r.group("tick").bursts >= 170, "{r}");
    assert!(r.task("tick").runtime_ns > 8 * MS, "{r}");

    let s = scenario(1, 200, vec![hog("a"), hog("b")]);
    let r = simulate(&s, &mut Decide(any_cpu)).unwrap();
    // 100 ms each.
    for name in ["a", "b"] {
        assert!(r.task(name).runtime_ns > 90 * MS, "{name}: {r}");
    }
}

/// An overdue displaced task resumes at the head of its CPU's local queue (`SCX_ENQ_HEAD`),
/// also ahead of the decisions the same `ops.dispatch` call carried out into that local
/// queue (`scx_bpf_dsq_move_to_local` flushes them there first, then moves the task). One
/// busy CPU, decisions to the CPU's own local queue (as `SeedFifo`'s are): when the hog's
/// slice ends, the CPU resumes the ticker the scheduler displaced, and the hog goes to user
/// space; that record wakes the scheduler, whose wake-up displaces the ticker again 0.5 us
/// into its run. Cut short, it is overdue at once, and resumes ahead of the hog's decision.
/// At the tail of the local queue it resumed behind the hog every time, for 0.5 us per hog
/// slice: 0 bursts (19 us) in 200 ms.
#[test]
fn an_overdue_displaced_task_resumes_at_the_head_of_the_local_queue() {
    let s = scenario(1, 200, vec![hog("hog"), ticker("tick", 50, 1000)]);
    let r = simulate(&s, &mut SeedFifo).unwrap();
    // 163.
    assert!(r.stats.nr_displaced_dispatches > 120, "{r}");
    // 195 bursts, 9.75 ms; 4.5 us (p99).
    assert!(r.group("tick").bursts >= 170, "{r}");
    assert!(r.task("tick").runtime_ns > 8 * MS, "{r}");
    assert!(r.group("tick").wake_wait.p99_ns < 50 * US, "{r}");
    // 189.6 ms.
    assert!(r.task("hog").runtime_ns > 170 * MS, "{r}");
}

/// A task the scheduler's wake-up cut short (less than PREEMPT_MIN_RUN_NS into its run, as no
/// policy's preemption would) is overdue at once: it resumes ahead of the FIFO queue. One
/// CPU, three hogs taking turns through the FIFO queue: when a hog's slice ends the CPU takes
/// the next one, and the record of the first wakes the scheduler, which displaces the next
/// one 0.5 us into its run. The displaced hog resumes at once and the three share the CPU
/// evenly; without the rule it waits behind the third hog each time: 150 / 0.03 / 150 ms.
#[test]
fn a_task_cut_short_by_the_scheduler_resumes_ahead_of_the_fifo_queue() {
    let s = scenario(1, 300, vec![hog("h").count(3)]);
    let r = simulate(&s, &mut Decide(any_cpu)).unwrap();
    // 59.
    assert!(r.stats.nr_displaced_dispatches >= 50, "{r}");
    // 100 ms each; a hog waits 7 us (p50) after a displacement.
    for t in &r.tasks {
        assert!(
            (90 * MS..=110 * MS).contains(&t.runtime_ns),
            "{}: {r}",
            t.name
        );
    }
    assert!(r.group("h").wait.p50_ns < 50 * US, "{r}");
}

/// A displaced task resumes ahead of the FIFO queue once it has waited RESUME_MAX_WAIT_NS.
/// One CPU, three hogs taking turns through the FIFO queue, the scheduler waking 250 us after
/// a record: the record of a hog whose slice ended displaces the next one 250 us into its run
/// (not cut short), which waits behind the FIFO queue's head, the third hog, for its slice
/// (5 ms), and then, overdue, resumes first: no hog waits more than 5.5 ms (145 / 59 / 96 ms
/// of CPU). Without the rule the displaced hog waits until the FIFO queue is empty: 12 / 7 /
/// 281 ms, waits of 15.5 ms.
#[test]
fn a_displaced_task_resumes_first_once_it_has_waited_the_bound() {
    let mut s = scenario(1, 300, vec![hog("h").count(3)]);
    s.sched.wakeup_latency_ns = 250 * US;
    let r = simulate(&s, &mut Decide(any_cpu)).unwrap();
    // 55.
    assert!(r.stats.nr_displaced_dispatches >= 45, "{r}");
    for t in &r.tasks {
        assert!(t.max_starvation_ns < 6 * MS, "{}: {r}", t.name);
        assert!(t.runtime_ns > 40 * MS, "{}: {r}", t.name);
    }
}

#[test]
fn per_cpu_kthreads_are_dispatched_by_bpf_unless_full_user() {
    let kt = ticker("kworker", 20, 1000).cpus(&[1]).kthread();
    let mut s = scenario(2, 100, vec![hog("hog"), kt]);
    let r = simulate(&s, &mut SeedFifo).unwrap();
    // (Inserted without preemption: it waits for the slice of the task on its CPU.)
    assert!(r.stats.nr_kernel_dispatches >= 15, "{r}");
    s.sched.full_user = true;
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    assert_eq!(r.stats.nr_kernel_dispatches, 0);
    assert!(spy.seen.borrow().queued.iter().any(|t| t.is_kthread()));
}

#[test]
fn only_the_scheduling_thread_and_privileged_threads_bypass_the_policy() {
    // Two other threads of the scheduler process: one plain, one registered as privileged.
    let helper = ticker("helper", 50, 1000).sched_thread();
    let privileged = ticker("privileged", 50, 1000).privileged();
    let mut s = scenario(2, 100, vec![hog("hog"), helper, privileged]);
    s.sched.direct_idle = true;
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    let seen = spy.seen.borrow();
    let names = |t: &&QueuedTask| t.comm_str().to_string();
    let seen_names: Vec<String> = seen.queued.iter().map(|t| names(&t)).collect();
    // The plain thread goes through the policy, and user space can tell it is its own.
    let helper_pid = r.task("helper").pid;
    assert!(
        seen.queued
            .iter()
            .any(|t| t.pid == helper_pid && t.tgid == scx_userland_sim::SCHED_PID),
        "the scheduler's plain thread never reached the policy: {seen_names:?}\n{r}"
    );
    // The privileged one never does, and runs all the same.
    assert!(
        !seen_names.iter().any(|n| n == "privileged"),
        "a privileged thread reached the policy\n{r}"
    );
    assert!(r.group("privileged").bursts >= 90, "{r}");
    // Nor is it dispatched straight to an idle CPU like other wake-ups (direct_idle).
    let direct_with = r.stats.nr_direct_dispatches;
    let alone = scenario(
        2,
        100,
        vec![hog("hog"), ticker("privileged", 50, 1000).privileged()],
    );
    let mut alone = alone;
    alone.sched.direct_idle = true;
    let r = simulate(&alone, &mut SeedFifo).unwrap();
    assert!(r.stats.nr_direct_dispatches <= 1, "{r}");
    assert!(direct_with >= 90);
}

/// REENQ'd tasks to any CPU (`RL_CPU_ANY`), the others to the CPU the kernel picked.
fn reenq_anywhere(t: &QueuedTask) -> Option<Dispatch> {
    let mut d = Dispatch::new(t);
    if t.flags & (1 << 40) != 0 {
        d.cpu = RL_CPU_ANY;
    }
    Some(d)
}

#[test]
fn a_higher_class_taking_a_cpu_re_enqueues_what_waits_there() {
    // A hog starts on CPU 1 (CPU 0 runs the scheduler then), and stays there. A real-time
    // task pinned to CPU 1 sleeps 10 ms, then runs for 20 ms: the hog, put back into CPU
    // 1's local queue, must not wait behind it while CPU 0 is idle.
    let rt = TaskSpec::new("rt", vec![Op::SleepUs(10_000), Op::RunUs(20_000)])
        .repeat()
        .cpus(&[1])
        .rt();
    let s = scenario(2, 100, vec![hog("hog"), rt]);
    let mut spy = Spy::new(Decide(reenq_anywhere));
    let r = simulate(&s, &mut spy).unwrap();
    let reenq = spy
        .seen
        .borrow()
        .queued
        .iter()
        .filter(|t| t.flags & (1 << 40) != 0)
        .count();
    // (The counter also has the scheduler's own re-enqueues, which BPF handles itself.)
    assert!(reenq >= 1 && r.stats.nr_reenqueued >= reenq as u64, "{r}");
    // Re-enqueued, the hog went to the idle CPU 1 at once.
    assert!(r.task("hog").max_starvation_ns < MS, "{r}");
    assert_eq!(r.task("hog").cpus_used, [0, 1], "{r}");
    // The real-time task ran its bursts whatever sched_ext did.
    assert!(r.group("rt").bursts >= 3, "{r}");
    assert!(r.group("rt").wake_wait.max_ns == 0, "{r}");
}

#[test]
fn mm_kthreads_are_dispatched_by_bpf_unless_full_user() {
    let mm = ticker("kswapd0", 50, 1000).kthread();
    let compact = ticker("kcompactd0", 50, 1000).kthread();
    let other = ticker("kworker", 50, 1000).kthread();
    let mut s = scenario(2, 100, vec![hog("hog"), mm, compact, other]);
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    let mut seen: Vec<String> = spy
        .seen
        .borrow()
        .queued
        .iter()
        .map(|t| t.comm_str().to_string())
        .collect();
    seen.sort();
    seen.dedup();
    assert!(
        !seen
            .iter()
            .any(|n| n.starts_with("ksw") || n.starts_with("kco")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|n| n == "kworker"));
    assert!(r.stats.nr_mm_kthread_dispatches >= 180, "{r}");
    assert!(r.group("kswapd0").bursts >= 90, "{r}");
    s.sched.full_user = true;
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    assert_eq!(r.stats.nr_mm_kthread_dispatches, 0);
    assert!(spy
        .seen
        .borrow()
        .queued
        .iter()
        .any(|t| t.comm_str() == "kswapd0"));
}

#[test]
fn tasks_fork_exit_change_nice_and_affinity() {
    let parent = TaskSpec::new(
        "parent",
        vec![
            Op::RunUs(100),
            Op::Spawn("child".into()),
            Op::Nice(5),
            Op::Affinity(vec![1]),
            Op::RunUs(100),
            Op::SleepUs(1000),
        ],
    )
    .repeat();
    let child = TaskSpec::new("child", vec![Op::RunUs(200), Op::Exit]).spawn_only();
    let s = scenario(2, 20, vec![parent, child]);
    let mut spy = Spy::new(SeedFifo);
    let r = simulate(&s, &mut spy).unwrap();
    let children: Vec<_> = r.tasks.iter().filter(|t| t.group == "child").collect();
    assert!(children.len() >= 10, "{r}");
    assert!(children.iter().filter(|c| c.exited).count() >= 9, "{r}");
    assert!(r.stats.nr_exit_events >= 9, "{r}");
    let seen = spy.seen.borrow();
    assert!(seen.queued.iter().any(|t| t.is_exiting()));
    let parent_recs: Vec<_> = seen
        .queued
        .iter()
        .filter(|t| t.comm_str() == "parent")
        .collect();
    // Nice 5 is weight 33 in sched_ext's scale; the affinity change bumped cpumask_cnt.
    assert!(parent_recs
        .iter()
        .any(|t| t.weight == 33 && t.cpumask_cnt >= 1));
    assert!(parent_recs.iter().any(|t| t.nr_cpus_allowed == 1));
    assert_eq!(r.stats.nr_bounce_dispatches, 0, "{r}");
}

#[test]
fn wait_and_wake_pair_tasks_like_a_pipe() {
    let ping = TaskSpec::new(
        "ping",
        vec![Op::RunUs(10), Op::Wake("pong".into()), Op::Wait],
    )
    .repeat();
    let pong = TaskSpec::new(
        "pong",
        vec![Op::Wait, Op::RunUs(10), Op::Wake("ping".into())],
    )
    .repeat();
    let s = scenario(2, 50, vec![ping, pong]);
    let r = simulate(&s, &mut SeedFifo).unwrap();
    let (a, b) = (r.task("ping").bursts, r.task("pong").bursts);
    assert!(a > 100 && a.abs_diff(b) <= 1, "{r}");
}

#[test]
fn same_seed_same_result_other_seed_other_result() {
    let s = Scenario::from_json(include_str!("../scenarios/mixed-100.json")).unwrap();
    let short = Scenario {
        duration_ms: 200,
        ..s
    };
    let a = simulate(&short, &mut scx_fifo::Fifo::new()).unwrap();
    let b = simulate(&short, &mut scx_fifo::Fifo::new()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_json(), b.to_json());
    let c = simulate(
        &Scenario {
            seed: 7,
            ..short.clone()
        },
        &mut scx_fifo::Fifo::new(),
    )
    .unwrap();
    assert_ne!(a.group("worker"), c.group("worker"));
}

#[test]
fn scenarios_round_trip_through_json_and_bad_ones_are_refused() {
    let s = Scenario::from_json(include_str!("../scenarios/mixed-100.json")).unwrap();
    assert_eq!(Scenario::from_json(&s.to_json()).unwrap(), s);
    let bad = r#"{"cpus": 2, "tasks": [{"name": "a", "program": [{"wake": "nobody"}]}]}"#;
    assert!(matches!(
        Scenario::from_json(bad),
        Err(SimError::Scenario(_))
    ));
    let bad =
        r#"{"cpus": 2, "tasks": [{"name": "a", "repeat": true, "program": [{"wake": "a"}]}]}"#;
    assert!(matches!(
        Scenario::from_json(bad),
        Err(SimError::Scenario(_))
    ));
    let bad = r#"{"cpus": 2, "tasks": [{"name": "a", "cpus": [5], "program": []}]}"#;
    assert!(matches!(
        Scenario::from_json(bad),
        Err(SimError::Scenario(_))
    ));
    assert!(matches!(Scenario::from_json("{"), Err(SimError::Json(_))));
}

#[test]
fn a_full_queued_ring_makes_bpf_run_the_task_itself() {
    // The scheduler stops at once and 1000 tasks wake every millisecond: the ring (about
    // 35k records) fills up; the stall guard also steps in.
    let mut s = scenario(4, 150, vec![ticker("tick", 1, 1000).count(1000)]);
    s.sched.stopped_ms = vec![[0, 150]];
    let r = simulate(&s, &mut SeedFifo).unwrap();
    assert!(r.stats.nr_sched_congested > 0, "{r}");
    assert!(r.stats.nr_stalls >= 1, "{r}");
    assert!(r.group("tick").bursts > 40_000, "{r}");
}

#[test]
fn vtime_zero_joins_the_vtime_queue_when_asked() {
    // Every ticker wake-up at vtime 0: through the vtime queue with `by_vtime`, through the
    // FIFO queue with a plain `vtime: 0`.
    let s = scenario(2, 100, vec![ticker("tick", 50, 1000)]);
    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| Some(Dispatch::by_vtime(t, 0))),
    )
    .unwrap();
    assert!(r.stats.nr_vtime_dispatches >= 90, "{r}");
    assert_eq!(
        r.stats.nr_vtime_dispatches, r.stats.nr_user_dispatches,
        "{r}"
    );
    let r = simulate(&s, &mut Decide(|t: &QueuedTask| Some(Dispatch::fifo(t)))).unwrap();
    assert_eq!(r.stats.nr_vtime_dispatches, 0, "{r}");
}

/// Only a CPU's own `ops.dispatch` serves its resume queue, and a CPU whose local queue never
/// runs dry never calls it: the stall timer gives the oldest task of a resume queue left
/// waiting 10 ms past its turn to the head of its CPU's local queue. Two CPUs: six hogs that
/// may only use CPU 0, each sent back there (`SeedFifo`), and a ticker on CPU 1 whose
/// wake-ups keep CPU 1 carrying out the decisions for CPU 0. The scheduler wakes up on
/// CPU 0 while CPU 1 is busy (50 ms), displaces hogs there, then wakes up on CPU 1. No hog
/// goes more than 74 ms without running (24 displaced, 6 rescued); without the rule a hog
/// waits in the resume queue for the rest of the run (1,968 ms).
#[test]
fn the_stall_timer_serves_a_resume_queue_its_cpu_never_looks_at() {
    let mut hogs = hog("hog");
    hogs.count = 6;
    hogs.cpus = vec![0];
    let mut tick = ticker("tick", 20, 1000);
    tick.cpus = vec![1];
    // CPU 1 busy for the first 50 ms: the scheduler wakes up on CPU 0 until then.
    let mut other = TaskSpec::new("other", vec![Op::RunUs(50_000)]);
    other.cpus = vec![1];
    let s = scenario(2, 2000, vec![hogs, tick, other]);
    let r = simulate(&s, &mut SeedFifo).unwrap();
    assert!(r.stats.nr_displaced_dispatches > 0, "{r}");
    assert!(r.stats.nr_resume_rescues > 0, "{r}");
    assert!(r.group("hog").max_starvation_ns < 100 * MS, "{r}");
}

/// A task in a shared queue is taken by whichever CPU calls `ops.dispatch`, but a task that
/// may only use a CPU whose local queue never runs dry waits there for good: the stall timer
/// moves a task that waited 1 s (with the default `timeout_ms`) to the head of its CPU's
/// local queue. Two CPUs: six hogs that may only use CPU 0, each sent back there, a seventh
/// sent to any CPU (the FIFO queue), and a ticker on CPU 1 whose wake-ups keep CPU 1
/// carrying out the decisions for CPU 0. The seventh waits at most 1,015 ms (3 moves in
/// 4 s); without the rule it waits for the rest of the run (3,964 ms).
#[test]
fn the_stall_timer_moves_a_task_no_cpu_takes_from_a_shared_queue() {
    let mut hogs = hog("hog");
    hogs.count = 6;
    hogs.cpus = vec![0];
    let mut odd = hog("odd");
    odd.cpus = vec![0];
    let mut tick = ticker("tick", 20, 1000);
    tick.cpus = vec![1];
    let s = scenario(2, 4000, vec![hogs, odd, tick]);
    let r = simulate(
        &s,
        &mut Decide(|t: &QueuedTask| {
            let mut d = Dispatch::new(t);
            if t.comm_str() == "odd" {
                d.cpu = RL_CPU_ANY;
            }
            Some(d)
        }),
    )
    .unwrap();
    assert!(r.stats.nr_shared_rescues > 0, "{r}");
    assert!(r.task("odd").max_starvation_ns < 1100 * MS, "{r}");
}
