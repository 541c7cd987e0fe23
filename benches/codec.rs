//! Hot-path microbenchmarks: setup-header codec and event encoding. Named by shape; report bytes.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mux_bw::report::events::{self, Event, RouteSample, RouteState, Sample};
use mux_bw::wire::addr::NodeAddr;
use mux_bw::wire::identity::NodeId;
use mux_bw::wire::mode::Mode;
use mux_bw::wire::setup::{self, SetupRequest, REQUEST_PREFIX_LEN};

fn request(hops: usize) -> SetupRequest {
    SetupRequest {
        route_index: 7,
        hop_index: 0,
        mode: Mode::Up,
        setup_timeout_ms: 5000,
        token: b"a-shared-token".to_vec(),
        client_key: [7; mux_bw::wire::proof::KEY_LEN],
        stripe: None,
        next: (0..hops)
            .map(|i| NodeAddr {
                id: NodeId([i as u8; 16]),
                addr: format!("127.0.0.1:{}", 7600 + i)
                    .parse()
                    .expect("literal address"),
            })
            .collect(),
    }
}

fn setup_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("setup_header");
    let req = request(7);
    let bytes = req.encode();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode/7_hops", |b| b.iter(|| black_box(&req).encode()));
    g.bench_function("decode/7_hops", |b| {
        b.iter(|| {
            let prefix: &[u8; REQUEST_PREFIX_LEN] = bytes[..REQUEST_PREFIX_LEN]
                .try_into()
                .expect("prefix length");
            let len = setup::decode_request_prefix(black_box(prefix)).expect("valid");
            setup::decode_request_body(&bytes[REQUEST_PREFIX_LEN..REQUEST_PREFIX_LEN + len])
        })
    });
    g.finish();
}

fn event_encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_json");
    for routes in [4u32, 64] {
        let ev = Event::Sample(Sample {
            interval_start_ns: 1_000_000_000,
            interval_end_ns: 2_000_000_000,
            omitted: false,
            active_routes: routes as usize,
            aggregate_bps: 2_600_000_000,
            late: false,
            routes: (0..routes)
                .map(|i| RouteSample {
                    route_index: i,
                    bytes_sent: 123_456_789,
                    bytes_received: 0,
                    sent_bps: 650_000_000,
                    received_bps: 0,
                    state: RouteState::Up,
                    lost_packets: 12,
                    cwnd_bytes: Some(1_234_567),
                    link_rtt_ns: Some(1_500_000),
                })
                .collect(),
            stripe: None,
        });
        let len = events::to_json_line(&ev, Duration::from_secs(2)).len();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("sample/{routes}_routes"), |b| {
            b.iter(|| events::to_json_line(black_box(&ev), Duration::from_secs(2)))
        });
    }
    g.finish();
}

/// The striped transfer's payload pattern: what each segment costs the client to write and the
/// destination to verify.
fn stripe_pattern(c: &mut Criterion) {
    use mux_bw::wire::stripe;
    let mut g = c.benchmark_group("stripe_pattern");
    let mut buf = vec![0u8; 64 * 1024];
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("fill/64K", |b| {
        b.iter(|| stripe::fill(7, black_box(1 << 20), &mut buf))
    });
    stripe::fill(7, 1 << 20, &mut buf);
    g.bench_function("verify/64K", |b| {
        b.iter(|| assert!(stripe::verify(7, black_box(1 << 20), &buf)))
    });
    g.finish();
}

criterion_group!(benches, setup_header, event_encoding, stripe_pattern);
criterion_main!(benches);
