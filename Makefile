# mux-bw — common tasks. `make demo` shows the tool working; `make test` is what CI runs.
CARGO ?= cargo

.PHONY: build test lint fmt bench demo clean schema netns-demo install

build:
	$(CARGO) build --release

## fmt check, clippy -D warnings (functions capped at 80 lines, clippy.toml), docs -D warnings,
## then the whole test suite.
test: lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings -W clippy::too_many_lines
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench

## Puts `mux-bw` on your PATH (~/.cargo/bin), for the README's commands after `make demo`.
install:
	$(CARGO) install --locked --path .

## The question mux-bw answers, on emulated links in one process: one direct route over a
## 100 mbit link, then 4 disjoint routes through relays over 50 mbit links each; then compare.
DEMO_LINKS = --direct-rate 100mbit --link-rate 50mbit --link-delay 5ms --omit 1s --duration 5s --probe-rtt
demo: build
	./target/release/mux-bw lab $(DEMO_LINKS) --routes 1 --min-hops 1 --json-file target/demo-direct.ndjson
	./target/release/mux-bw lab $(DEMO_LINKS) --routes 4 --min-hops 2 --json-file target/demo-mux.ndjson
	./target/release/mux-bw compare target/demo-direct.ndjson target/demo-mux.ndjson

## As root (no sudo needed or used): namespaces with tbf-shaped links; direct (50 mbit) vs 4 routes through relays (4 x 20 mbit).
netns-demo:
	$(CARGO) test --release --test netns -- --ignored --nocapture --test-threads 1 netns_demo

## Regenerate docs/events.schema.json from the event types.
schema:
	UPDATE_SCHEMA=1 $(CARGO) test --test schema committed_schema_matches_the_types

clean:
	$(CARGO) clean
