//! `vm-thread-sched`: a FIFO scheduler whose scheduling thread is not the process's main
//! thread. The main thread sleeps 20 ms at a time, so it goes through the policy like any task
//! and, when the process is killed, it is almost always asleep: woken by the kill, it then
//! waits for a decision that never comes.
//! A VM test SIGKILLs it to check that BPF steps aside as soon as the scheduling thread
//! dies, instead of waiting for the main thread to exit (which needs that decision) or for
//! the stall guard. The stall guard is set to 5 s so that it cannot be what rescues it.
//!
//! ```text
//! vm-thread-sched
//! ```
//! Prints `attached` once the scheduler is loaded, then runs until killed.

use std::time::Duration;

use scx_userland::{BpfScheduler, Dispatch};

fn main() {
    let sched = std::thread::spawn(|| {
        let mut bpf = match BpfScheduler::builder()
            .stall_timeout_ms(5_000)
            .timeout_ms(10_000)
            .build()
        {
            Ok(bpf) => bpf,
            Err(e) => {
                eprintln!("vm-thread-sched: {e}");
                std::process::exit(1);
            }
        };
        println!("attached");
        loop {
            while let Ok(Some(task)) = bpf.dequeue_task() {
                if !task.is_exiting() {
                    let _ = bpf.dispatch_task(&Dispatch::fifo(&task));
                }
            }
            if bpf.exited() || bpf.wait_for_tasks(Duration::from_millis(5)).is_err() {
                std::process::exit(1);
            }
        }
    });
    while !sched.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
}
