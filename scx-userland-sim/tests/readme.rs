//! The README's example, verbatim.

use scx_fifo::Fifo;
use scx_userland_sim::{simulate, Op, Scenario, TaskSpec};

#[test]
fn wakeups_never_wait_behind_hogs() {
    let hog = TaskSpec::new("hog", vec![Op::RunUs(1_000_000)])
        .repeat()
        .count(2);
    let tick = TaskSpec::new("tick", vec![Op::RunUs(50), Op::PeriodUs(1000)]).repeat();
    let ping = TaskSpec::new(
        "ping",
        vec![Op::RunUs(30), Op::Wake("pong".into()), Op::Wait],
    );
    let pong = TaskSpec::new(
        "pong",
        vec![Op::Wait, Op::RunUs(30), Op::Wake("ping".into())],
    );
    let mut scenario = Scenario {
        cpus: 4,
        duration_ms: 500,
        tasks: vec![hog, tick, ping.repeat(), pong.repeat()],
        ..Scenario::default()
    };
    scenario.sched.direct_idle = true; // as scx-fifo's main.rs builds it
    let r = simulate(&scenario, &mut Fifo::new()).unwrap();
    assert!(r.group("tick").wake_wait.p99_ns < 200_000, "{r}");
    assert!(r.group("hog").cpu_share > 1.9, "{r}");
    assert_eq!(r.stats.nr_stalls, 0);
}
