# mux-bw — common tasks. `make demo` shows the tool working; `make test` is what CI runs.
CARGO ?= cargo

.PHONY: build test lint fmt bench demo clean schema netns-demo

build:
	$(CARGO) build --release

## fmt check, clippy -D warnings, docs -D warnings, then the whole test suite.
test: lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench

## A destination and 8 relays in one process on loopback: 1 direct route, then 4 routes via disjoint relays.
demo: build
	./target/release/mux-bw lab --routes 1 --min-hops 1 --duration 3s
	./target/release/mux-bw lab --routes 4 --min-hops 2 --duration 3s

## As root: namespaces with tbf-shaped links; direct (50 mbit) vs 4 routes through relays (4 x 20 mbit).
netns-demo:
	$(CARGO) test --release --test netns -- --ignored --nocapture --test-threads 1 netns_demo

## Regenerate docs/events.schema.json from the event types.
schema:
	UPDATE_SCHEMA=1 $(CARGO) test --test schema committed_schema_matches_the_types

clean:
	$(CARGO) clean
