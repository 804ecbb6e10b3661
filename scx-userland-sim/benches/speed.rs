//! How fast the simulator is: a 10-second virtual scenario with 100 tasks on 8 CPUs
//! (`scenarios/mixed-100.json`) under scx-fifo's policy and the classic FIFO (`SeedFifo`).
//! Prints host time per run; no assertion (`cargo bench -p scx-userland-sim --bench speed`).

use std::time::Instant;

use scx_userland_sim::{simulate, Scenario, SeedFifo};

fn main() {
    let scenario =
        Scenario::from_json(include_str!("../scenarios/mixed-100.json")).expect("scenario");
    for round in 0..3 {
        let t0 = Instant::now();
        let r = simulate(&scenario, &mut scx_fifo::Fifo::new()).expect("fifo run");
        let fifo = t0.elapsed();
        let t0 = Instant::now();
        let s = simulate(&scenario, &mut SeedFifo).expect("seed run");
        let seed = t0.elapsed();
        println!(
            "round {round}: {} virtual s, {} tasks, {} CPUs: fifo {:.3} s host ({} events, {} schedule calls), seed {:.3} s host ({} events)",
            scenario.duration_ms / 1000,
            r.tasks.len(),
            scenario.cpus,
            fifo.as_secs_f64(),
            r.events,
            r.scheduler.calls,
            seed.as_secs_f64(),
            s.events,
        );
    }
}
