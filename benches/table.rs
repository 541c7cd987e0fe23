//! Route-table lookups under contention: T tasks each doing lookups on their own route.
//! Shows that the lock guards only the map (a lookup is a clone of an Arc) and how it scales.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mux_bw::client::table::{RouteRef, RouteTable};
use mux_bw::wire::identity::NodeId;

const LOOKUPS_PER_TASK: u64 = 1_000;

fn rref(index: u32) -> RouteRef {
    RouteRef {
        dst: NodeId([7; 16]),
        index,
    }
}

fn contended_lookups(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("route_table");
    g.measurement_time(Duration::from_secs(3));
    for tasks in [2u32, 8, 64] {
        let table = Arc::new(RouteTable::default());
        for i in 0..tasks {
            table.insert(rref(i), Arc::new(i)).expect("distinct refs");
        }
        g.throughput(Throughput::Elements(u64::from(tasks) * LOOKUPS_PER_TASK));
        g.bench_with_input(
            BenchmarkId::new("lookup", format!("{tasks}_tasks")),
            &tasks,
            |b, &tasks| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let handles: Vec<_> =
                                (0..tasks)
                                    .map(|i| {
                                        let table = table.clone();
                                        tokio::spawn(async move {
                                            let mut sum = 0u32;
                                            for _ in 0..LOOKUPS_PER_TASK {
                                                let h: Result<
                                                    u32,
                                                    mux_bw::client::table::TableError,
                                                > = table
                                                    .call(rref(i), |h| async move { Ok(*h) })
                                                    .await;
                                                sum = sum.wrapping_add(h.expect("registered"));
                                            }
                                            sum
                                        })
                                    })
                                    .collect();
                            for h in handles {
                                std::hint::black_box(h.await.expect("task"));
                            }
                        }
                        start.elapsed()
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, contended_lookups);
criterion_main!(benches);
