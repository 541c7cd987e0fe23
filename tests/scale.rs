//! Many relayed routes at once, in the lab: an order-of-magnitude guard, not a rate. Every one
//! of 256 routes, each through its own relay, must move bytes within the first 3 s of the load
//! (on the lab's old layout, with the destination in the run's runtime, 5 to 17 of them had
//! moved nothing by then; docs/PERFORMANCE.md, "The lab's layout").

mod common;

use std::time::Duration;

use common::{lab_json, of_type};

#[test]
fn every_one_of_256_relayed_routes_moves_bytes_within_3_s() {
    let events = lab_json(
        &[
            "--relays",
            "256",
            "--routes",
            "256",
            "--min-hops",
            "2",
            "--duration",
            "3s",
            "--interval",
            "1s",
        ],
        Duration::from_secs(120),
    );
    let samples = of_type(&events, "sample");
    let last = samples.last().expect("samples");
    let idle: Vec<u64> = last["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bytes_sent"] == 0)
        .map(|r| r["route_index"].as_u64().unwrap())
        .collect();
    assert!(
        idle.is_empty(),
        "{} of 256 routes moved nothing in 3 s: {idle:?}",
        idle.len()
    );
    let s = of_type(&events, "summary")[0];
    assert_eq!(s["routes_established"], 256);
    assert_eq!(s["routes_failed"], 0);
}
