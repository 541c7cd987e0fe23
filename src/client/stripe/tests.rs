//! The striped transfer's books: segments in order and in turn within the window, resends of a
//! failed route's unconfirmed segments, a sized transfer's end, lane caps, confirmation
//! deadlines and rates measured while held back.

use super::*;

fn stripe(scheduler: Scheduler, window: u32, bytes: Option<u64>) -> Stripe {
    let cfg = StripeConfig {
        scheduler,
        segment: 1000,
        window,
        bytes,
    };
    Stripe::new(cfg, [3; TRANSFER_ID_LEN], CancellationToken::new())
}

fn report(s: &Stripe, index: u32, received: u64, delivered: u64) {
    s.on_report(
        index,
        &TransferFigures {
            received,
            delivered,
            ..Default::default()
        },
    );
}

#[test]
fn segments_go_out_in_order_in_turn_and_within_the_window() {
    let s = stripe(Scheduler::RoundRobin, 3500, None);
    assert!(!s.spec().rejoin);
    s.route_up(0);
    s.route_up(1);
    assert!(s.spec().rejoin, "later setups rejoin");
    let now = Instant::now();
    assert_eq!(s.claim(1, now), None, "route 0's turn");
    let offsets: Vec<(u32, u64)> = [0, 1, 0]
        .iter()
        .map(|&i| (i, s.claim(i, now).unwrap().offset))
        .collect();
    assert_eq!(offsets, [(0, 0), (1, 1000), (0, 2000)]);
    // 3000..4000 would end past delivered (0) + window (3500).
    assert_eq!(s.claim(1, now), None);
    report(&s, 0, 1000, 1000);
    assert_eq!(s.claim(1, now).map(|h| h.offset), Some(3000));
}

#[test]
fn a_failed_route_s_unconfirmed_segments_are_resent_first_and_only_those() {
    let s = stripe(Scheduler::RoundRobin, 1 << 20, None);
    s.route_up(0);
    s.route_up(1);
    let now = Instant::now();
    for i in [0, 1, 0, 1, 0, 1] {
        s.claim(i, now).unwrap();
    }
    // Route 1 carried 1000, 3000, 5000; the destination confirmed its first 1000 bytes.
    report(&s, 1, 1000, 0);
    s.route_down(1);
    let resent: Vec<u64> = (0..2).map(|_| s.claim(0, now).unwrap().offset).collect();
    assert_eq!(resent, [3000, 5000]);
    assert_eq!(s.figures().resent.load(Ordering::Relaxed), 2);
    assert_eq!(s.claim(0, now).unwrap().offset, 6000, "then new bytes");
    // A resend already delivered (reported by another route) is dropped, not sent.
    s.route_up(1);
    s.claim(1, now).unwrap();
    s.route_down(1);
    report(&s, 0, 0, 10_000);
    assert_eq!(s.claim(0, now).unwrap().offset, 8000);
}

#[test]
fn a_sized_transfer_ends_with_a_short_segment_and_is_done_when_it_arrived() {
    let done = CancellationToken::new();
    let cfg = StripeConfig {
        scheduler: Scheduler::EarliestArrival,
        segment: 1000,
        window: 1 << 20,
        bytes: Some(2500),
    };
    let s = Stripe::new(cfg, [1; TRANSFER_ID_LEN], done.clone());
    s.route_up(4);
    let now = Instant::now();
    let lens: Vec<u32> = (0..3).map(|_| s.claim(4, now).unwrap().len).collect();
    assert_eq!(lens, [1000, 1000, 500]);
    assert_eq!(s.claim(4, now), None, "all handed out");
    report(&s, 4, 2500, 2000);
    assert!(!done.is_cancelled());
    report(&s, 4, 2500, 2500);
    assert!(done.is_cancelled() && s.done_at().is_some());
}

#[test]
fn a_route_at_its_cap_waits_until_the_destination_confirms() {
    let s = stripe(Scheduler::EarliestArrival, u32::MAX, None);
    s.route_up(0);
    let now = Instant::now();
    let n = (0..10_000)
        .take_while(|_| s.claim(0, now).is_some())
        .count() as u64;
    assert_eq!(n * 1000, INITIAL_LANE_CAP.div_ceil(1000) * 1000);
    report(&s, 0, 5000, 5000);
    assert!(s.claim(0, now).is_some());
}

#[test]
fn bytes_wait_for_confirmation_from_when_they_were_written_not_from_the_last_confirmation() {
    let s = stripe(Scheduler::EarliestArrival, 1 << 20, None);
    s.route_up(0);
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(10);
    // Idle for 10 s, then a segment: it has waited for nothing yet.
    s.claim(0, later).unwrap();
    assert_eq!(s.unconfirmed_for(0, later), Duration::ZERO);
    assert_eq!(
        s.unconfirmed_for(0, later + Duration::from_secs(2)),
        Duration::from_secs(2)
    );
}

#[test]
fn a_route_held_back_by_the_transfer_keeps_its_measured_rate() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut r = Route::new(t0);
    r.written = 10_000_000;
    // 1 MB in 100 ms: 10 MB/s.
    r.confirm(1_000_000, ms(100));
    assert_eq!(r.rate(), Some(1e7));
    // Held back (not its turn, window full): 100 kB in the next 100 ms is not its pace.
    r.held_back = true;
    r.confirm(1_100_000, ms(200));
    assert_eq!(r.rate(), Some(1e7));
    // A window it was free in counts, and so does a faster held-back one.
    r.confirm(1_200_000, ms(300));
    r.held_back = true;
    r.confirm(3_200_000, ms(400));
    assert_eq!(r.rate(), Some(2e7));
    assert_eq!(r.rates.len(), 3);
}
