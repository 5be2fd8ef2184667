//! Tier 2: an event the full ring buffer cannot take is counted, never
//! silently lost (issue 12): 20,000 denied packets through
//! BPF_PROG_TEST_RUN with nobody reading, more than the 1 MiB ring holds;
//! every event of every drop is then either read or a loss counted in
//! `pilus_evstats` — the one place losses are counted, which the monitor,
//! the metrics (`pilus_datapath_events_lost_total`) and `pilus doctor` all
//! read.

mod common;
use common::*;
use pilus_abi::consts::*;
use pilus_datapath::{monitor::totals, testrun::TC_ACT_SHOT, Program};
use pilus_packet::tcp_flags::SYN;

#[test]
fn every_drop_is_an_event_read_or_a_loss_counted() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    let pkt = a_to_b().tcp(40000, 80, SYN).build();
    let run = |fx: &Fx, n: u32| {
        fx.ns
            .within(|| {
                fx.dp
                    .test_run(Program::FromContainer, fx.a.ifindex, &pkt, n)
            })
            .expect("enter ns")
            .expect("test run")
    };
    // One packet first: how many events a denied packet makes (its drop,
    // the policy's denial, and the traces the aggregation level wants).
    fx.events.drain();
    assert_eq!(run(&fx, 1).verdict, TC_ACT_SHOT, "B denies A by default");
    let one = fx.events.drain();
    assert_eq!(
        one.iter().filter(|e| e.kind == EVENT_DROP).count(),
        1,
        "one drop event per packet: {one:?}"
    );
    let per_packet = one.len() as u64;
    let before = totals(&fx.dp.event_stats().unwrap());

    let packets = 20_000u32;
    assert_eq!(run(&fx, packets).verdict, TC_ACT_SHOT);
    let dropped = fx.dp.metric(DROP_POLICY, DIR_INGRESS).unwrap();
    assert_eq!(dropped, u64::from(packets) + 1);
    let after = totals(&fx.dp.event_stats().unwrap());
    let (submitted, lost) = (after.submitted - before.submitted, after.lost - before.lost);
    let (mut read, mut drops_read) = (0u64, 0u64);
    loop {
        let batch = fx.events.drain();
        if batch.is_empty() {
            break;
        }
        read += batch.len() as u64;
        drops_read += batch.iter().filter(|e| e.kind == EVENT_DROP).count() as u64;
    }
    assert!(
        lost > 0,
        "the ring holds fewer than {packets} packets' events"
    );
    assert!(drops_read > 0, "the ring kept what fitted");
    assert_eq!(read, submitted, "every event submitted is read");
    assert_eq!(
        read + lost,
        per_packet * u64::from(packets),
        "read {read} + lost {lost}, {per_packet} events a packet"
    );
    // Counted once: the verdict counters hold the drops and nothing else
    // (no second loss counter beside pilus_evstats).
    let metrics = fx.dp.metrics().unwrap();
    assert_eq!(metrics.len(), 1, "only the policy drops: {metrics:?}");
    assert_eq!(
        (metrics[0].reason, metrics[0].direction, metrics[0].packets),
        (DROP_POLICY, DIR_INGRESS, dropped)
    );
}
