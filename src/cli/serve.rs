//! `serve` and `relay`: a node from flags, its URI announced on stdout (and `--node-file`),
//! served until SIGINT/SIGTERM; stderr says when it listens, starts draining and has stopped.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::args::NodeArgs;
use super::config::token_bytes;
use super::{interrupt_token, write_stdout, UsageError, EXIT_OK};
use crate::metrics::http;
use crate::node::{self, Limits, NodeConfig, Role};
use crate::wire::identity::{Identity, IdentityError};

/// `serve` or `relay`: a node until SIGINT/SIGTERM.
pub(super) async fn run_node(role: Role, a: NodeArgs) -> anyhow::Result<i32> {
    let listen = a.listen.unwrap_or_else(|| match role {
        Role::Destination => SocketAddr::from(([0, 0, 0, 0], 7600)),
        Role::Relay => SocketAddr::from(([0, 0, 0, 0], 7601)),
    });
    let token = node_token(&a)?;
    if token.is_none() && !a.open {
        return Err(UsageError(
            "a node needs --token T (or MUX_BW_TOKEN) so only your clients can use it; pass --open to accept anyone"
                .to_string(),
        )
        .into());
    }
    let identity = match &a.identity {
        // A key file that cannot be read, written or used is bad input, like any flag.
        Some(path) => Identity::load_or_create(path).map_err(|e| match e {
            IdentityError::Cert(_) => anyhow::Error::from(e),
            _ => UsageError::of(e).into(),
        })?,
        None => Identity::ephemeral()?,
    };
    let shutdown = interrupt_token();
    let cfg = NodeConfig {
        role,
        id: identity.id,
        token,
        header_timeout: a.header_timeout,
        limits: Limits {
            max_hops: a.max_hops,
            max_routes_per_client: a.max_routes_per_client,
            max_connections: a.max_connections,
            max_setup_timeout: a.max_setup_timeout,
            ..Limits::default()
        },
        drain_timeout: a.drain_timeout,
        tuning: a.tuning.tuning(),
        faults: node::Faults::default(),
    };
    // Bound before the node starts, so a port in use fails the start rather than a scrape.
    let metrics = match a.metrics {
        Some(addr) => Some(http::bind(addr).await.map_err(UsageError::of)?),
        None => None,
    };
    let running = node::start(listen, &identity, cfg, shutdown.clone())?;
    // The metrics server outlives the drain, so a scrape sees `mux_bw_draining 1`.
    let metrics_stop = CancellationToken::new();
    if let Some(listener) = metrics {
        if let Ok(local) = listener.local_addr() {
            say(&format!("metrics on http://{local}/metrics"));
        }
        let handler = http::node_handler(running.metrics.exposition().clone());
        http::spawn(listener, handler, metrics_stop.clone());
    }
    let _stop_metrics = metrics_stop.drop_guard();
    let uri = running.addr.uri();
    let announced = match &a.node_file {
        Some(path) => std::fs::write(path, format!("{uri}\n")).map_err(|e| {
            UsageError(format!("cannot write node file '{}': {e}", path.display())).into()
        }),
        None => Ok(()),
    }
    // A closed stdout only means nobody reads the URI; the node serves on.
    .and_then(|()| write_stdout(&format!("{uri}\n")));
    if let Err(e) = announced {
        shutdown.cancel();
        let _ = running.task.await;
        return Err(e);
    }
    let what = match role {
        Role::Destination => "destination",
        Role::Relay => "relay",
    };
    say(&format!(
        "mux-bw {what} listening on {} (Ctrl-C to stop)",
        running.local
    ));
    until_stopped(running, &shutdown, a.drain_timeout).await;
    Ok(EXIT_OK)
}

/// The node's token: `--token` or MUX_BW_TOKEN, except that an explicit `--open` wins over the
/// environment (said on stderr); `--open` with a typed `--token` is a contradiction.
fn node_token(a: &NodeArgs) -> Result<Option<Vec<u8>>, UsageError> {
    match (a.open, a.token.is_some(), a.token_from_env) {
        (true, true, false) => Err(UsageError(
            "--open accepts anyone, --token only its holders: pass one of them".to_string(),
        )),
        (true, true, true) => {
            let _ = writeln!(
                std::io::stderr(),
                "mux-bw: note: --open given: ignoring MUX_BW_TOKEN from the environment"
            );
            Ok(None)
        }
        _ => token_bytes(a.token.as_deref()),
    }
}

/// A line on stderr for whoever runs the node; a closed stderr is no reason to stop.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Waits for the node to stop: says how many routes it drains once `shutdown` fires, and that
/// it stopped.
async fn until_stopped(
    mut running: node::RunningNode,
    shutdown: &CancellationToken,
    drain: Duration,
) {
    tokio::select! {
        // Biased: a node with nothing to drain may have stopped by the time this looks, and the
        // signal must still be answered with its draining line.
        biased;
        // The node stops accepting at the same signal, and its routes run on: this is the count
        // its drain waits for.
        _ = shutdown.cancelled() => {
            say(&draining_line(running.established_routes(), drain));
            let _ = (&mut running.task).await;
        }
        _ = &mut running.task => {}
    }
    say("stopped");
}

/// `draining N routes (up to Ds)`, D in seconds (`0.5s`, `10s`).
fn draining_line(routes: usize, drain: Duration) -> String {
    format!("draining {routes} routes (up to {}s)", drain.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draining_line_gives_routes_and_seconds() {
        assert_eq!(
            draining_line(3, Duration::from_millis(500)),
            "draining 3 routes (up to 0.5s)"
        );
        assert_eq!(
            draining_line(0, Duration::from_secs(10)),
            "draining 0 routes (up to 10s)"
        );
    }
}
