//! The benchmarked paths move every record intact through the real kernel rings (and round
//! the rings several times). Runs as root on any kernel with user ring buffers; skipped
//! (and passing) otherwise.

use std::cell::RefCell;
use std::rc::Rc;

use scx_userland::{Dispatch, RL_CPU_ANY};
use scx_userland_benches::{
    dequeue_baseline, dequeue_ours_batch, dequeue_ours_single, dispatch_baseline, dispatch_ours,
    dispatches, Channel, Error, Stats, Wakeup, BATCH_SIZES, FIRST_PID, NR_TASKS,
};

fn open() -> Option<Channel> {
    match Channel::open() {
        Ok(ch) => Some(ch),
        // Only "not root" is a reason to skip: as root, this kernel must load the object.
        Err(Error::Unavailable(why)) if unsafe { libc::geteuid() } != 0 => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("setting up the channel: {e}"),
    }
}

/// Enough iterations that even batch 1 wraps the 256 KiB rings.
fn iterations(n: usize) -> usize {
    (16 * 1024 / n).max(8)
}

#[test]
fn every_path_moves_every_record() {
    let Some(ch) = open() else { return };
    let mut writer = ch.writer().unwrap();
    let baseline_writer = ch.baseline_writer().unwrap();
    let mut reader = ch.reader().unwrap();
    let sink = Rc::new(RefCell::new(Vec::new()));
    let baseline_reader = ch.baseline_reader(sink.clone()).unwrap();
    let mut out = Vec::new();
    let mut sent = 0u64;
    let mut queued = 0u64;

    for wakeup in [Wakeup::Never, Wakeup::Deployed] {
        ch.set_wakeup(wakeup).unwrap();
        for n in BATCH_SIZES {
            let batch = dispatches(n);
            for _ in 0..iterations(n) {
                dispatch_ours(&ch, &mut writer, &batch, || ()).unwrap();
                dispatch_baseline(&ch, &baseline_writer, &batch, || ()).unwrap();
                sent += 2 * n as u64;

                dequeue_ours_batch(&ch, &mut reader, n, &mut out, || ()).unwrap();
                check_queued(&out);
                dequeue_ours_single(&ch, &mut reader, n, &mut out, || ()).unwrap();
                check_queued(&out);
                dequeue_baseline(&ch, &baseline_reader, &sink, n, || ()).unwrap();
                check_queued(&sink.borrow());
                queued += 3 * n as u64;
            }
        }
    }

    let stats = ch.stats().unwrap();
    assert_eq!(
        stats,
        Stats {
            dispatch_records: sent,
            dispatch_ok: sent,
            queued_records: queued,
            ..Stats::default()
        }
    );
}

fn check_queued(tasks: &[scx_userland::QueuedTask]) {
    for t in tasks {
        assert!((FIRST_PID..FIRST_PID + NR_TASKS).contains(&t.pid), "{t:?}");
        assert_eq!(t.tgid, t.pid);
        assert_eq!(t.cpumask_cnt, t.pid as u64);
        assert_eq!(t.weight, 100);
        assert!(t.is_wakeup() && !t.idle_cpu() && !t.is_kthread());
        assert_eq!(t.comm_str(), "bench");
        assert!(t.stop_ts < t.enq_ts && t.start_ts < t.stop_ts);
    }
}

#[test]
fn bpf_side_validates_like_the_dispatcher() {
    let Some(ch) = open() else { return };
    let mut writer = ch.writer().unwrap();
    let pid = FIRST_PID + 5;
    let good = Dispatch {
        pid,
        cpu: 1,
        cpumask_cnt: pid as u64,
        ..Dispatch::default()
    };
    let batch = [
        good,
        // Unknown task.
        Dispatch {
            pid: FIRST_PID + NR_TASKS,
            ..good
        },
        // Stale affinity generation, and a CPU out of range: both bounce to any CPU.
        Dispatch {
            cpumask_cnt: 0,
            ..good
        },
        Dispatch { cpu: 4096, ..good },
        // Any CPU needs no check.
        Dispatch {
            cpu: RL_CPU_ANY,
            vtime: 7,
            ..good
        },
    ];
    // 8 times over: 40 records, packed 16 + 16 + 8, each decoded at its own offset.
    let batch: Vec<Dispatch> = batch.iter().copied().cycle().take(40).collect();
    let before = ch.stats().unwrap();
    dispatch_ours(&ch, &mut writer, &batch, || ()).unwrap();
    let after = ch.stats().unwrap();
    assert_eq!(after.dispatch_records - before.dispatch_records, 40);
    assert_eq!(after.dispatch_unknown - before.dispatch_unknown, 8);
    assert_eq!(after.dispatch_bounced - before.dispatch_bounced, 16);
    assert_eq!(after.dispatch_ok - before.dispatch_ok, 32);
    assert_eq!(after.dispatch_read_errors, 0);

    // A sample that is not a whole number of records is refused whole, and counted.
    assert!(writer.write(&[0u8; scx_userland::DISPATCH_RECORD_LEN + 20]));
    writer.publish();
    assert_eq!(ch.drain().unwrap(), 0);
    let last = ch.stats().unwrap();
    assert_eq!(last.dispatch_read_errors, 1);
    assert_eq!(last.dispatch_records, after.dispatch_records);
}

#[test]
fn ring_ends_refuse_the_wrong_map_or_size() {
    use scx_userland::ring::{RingReader, RingWriter};
    use std::os::fd::AsFd;
    let Some(ch) = open() else { return };
    let (queued, queued_size) = ch.ring("queued").unwrap();
    let (dispatched, dispatched_size) = ch.ring("dispatched").unwrap();
    // The right map and size.
    assert!(RingReader::new(queued.as_fd(), queued_size).is_ok());
    assert!(RingWriter::new(dispatched.as_fd(), dispatched_size).is_ok());
    // A size that is not the map's would map past the ring: refused.
    for size in [queued_size * 2, queued_size / 2, 3] {
        let err = RingReader::new(queued.as_fd(), size)
            .err()
            .expect("wrong size accepted");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    }
    let err = RingWriter::new(dispatched.as_fd(), dispatched_size * 2)
        .err()
        .expect("wrong size accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    // The other kind of ring: refused.
    let err = RingReader::new(dispatched.as_fd(), dispatched_size)
        .err()
        .expect("user ring accepted as ring");
    assert!(err.to_string().contains("BPF_MAP_TYPE_RINGBUF"), "{err}");
    let err = RingWriter::new(queued.as_fd(), queued_size)
        .err()
        .expect("ring accepted as user ring");
    assert!(
        err.to_string().contains("BPF_MAP_TYPE_USER_RINGBUF"),
        "{err}"
    );
}
