//! Tier 2: an event the full ring buffer cannot take is counted, never
//! silently lost (METRIC_EVENTS_LOST, issue 12): 20,000 denied packets
//! through BPF_PROG_TEST_RUN with nobody reading, more than the 1 MiB ring
//! holds; every drop is then either an event read or a loss counted.

mod common;
use common::*;
use pilus_abi::consts::*;
use pilus_datapath::{testrun::TC_ACT_SHOT, Program};
use pilus_packet::tcp_flags::SYN;

#[test]
fn every_drop_is_an_event_read_or_a_loss_counted() {
    let mut fx = Fx::new();
    fx.enforce('b', true, false);
    let packets = 20_000u32;
    let pkt = a_to_b().tcp(40000, 80, SYN).build();
    let out = fx
        .ns
        .within(|| {
            fx.dp
                .test_run(Program::FromContainer, fx.a.ifindex, &pkt, packets)
        })
        .expect("enter ns")
        .expect("test run");
    assert_eq!(out.verdict, TC_ACT_SHOT, "B denies A by default");
    let dropped = fx.dp.metric(DROP_POLICY, DIR_INGRESS).unwrap();
    assert_eq!(dropped, u64::from(packets));
    let lost = fx.dp.metric(METRIC_EVENTS_LOST, DIR_INGRESS).unwrap();
    let mut read = 0u64;
    loop {
        let batch = fx.drops();
        if batch.is_empty() {
            break;
        }
        read += batch.len() as u64;
    }
    assert!(lost > 0, "the ring holds fewer than {packets} events");
    assert!(read > 0, "the ring kept what fitted");
    assert_eq!(read + lost, dropped, "read {read} + lost {lost}");
    // The losses have a slot of their own, apart from the drop reasons.
    assert!(fx
        .dp
        .metrics()
        .unwrap()
        .iter()
        .any(|c| c.reason == METRIC_EVENTS_LOST && c.packets == lost));
}
