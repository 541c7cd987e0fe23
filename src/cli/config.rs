//! Flags validated into a `RunConfig` before any dial: tokens, relay pools and files, `--via`
//! pins, the route plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::args::{MeasureOpts, Pick, ProbeScope, RunOpts, StripeArgs};
use super::parse::WEEK;
use super::UsageError;
use crate::client::plan::{self, PlanRequest};
use crate::client::run::RunConfig;
use crate::client::stripe::StripeConfig;
use crate::client::wiring::PathWiring;
use crate::lab::emulation::Links;
use crate::lab::shaper::xorshift64star;
use crate::report::events::{PickView, ScanSummary};
use crate::wire::addr::NodeAddr;
use crate::wire::mode::Mode;
use crate::wire::setup::MAX_TOKEN_LEN;
use crate::wire::stripe::{MAX_REORDER_WINDOW, MAX_SEGMENT};

pub(super) fn random_token() -> anyhow::Result<Vec<u8>> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("no system randomness for the lab token"))?;
    Ok(raw
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes())
}

/// `--token` (or `MUX_BW_TOKEN`) as bytes. An empty token is refused, never taken as none:
/// only `--open` opens a node.
pub(super) fn token_bytes(token: Option<&str>) -> Result<Option<Vec<u8>>, UsageError> {
    match token {
        Some("") => Err(UsageError(format!(
            "invalid --token: empty; expected 1 to {MAX_TOKEN_LEN} bytes"
        ))),
        Some(t) if t.len() > MAX_TOKEN_LEN => Err(UsageError(format!(
            "invalid --token: {} bytes; expected 1 to {MAX_TOKEN_LEN} bytes",
            t.len()
        ))),
        Some(t) => Ok(Some(t.as_bytes().to_vec())),
        None => Ok(None),
    }
}

/// `--to`, `--relay` and `--relays-file` as the destination and the relay pool.
pub(super) fn node_pool(
    to: &str,
    relays: &[String],
    relays_file: Option<&Path>,
) -> Result<(NodeAddr, Vec<NodeAddr>), UsageError> {
    let dst: NodeAddr = to.parse().map_err(|e| UsageError(format!("--to: {e}")))?;
    let mut pool = Vec::new();
    for r in relays {
        pool.push(r.parse().map_err(|e| UsageError(format!("--relay: {e}")))?);
    }
    if let Some(path) = relays_file {
        pool.extend(read_relays_file(path)?);
    }
    Ok((dst, pool))
}

/// Largest scan ranking read (`--relays-from`).
const MAX_SCAN_FILE: u64 = 64 << 20;

/// The relay pool after `--relays-from` and `--pick`: a scan's measured relays (by name in a
/// lab, by URI otherwise), fastest first, or `pool` shuffled or as given; and what to report.
pub(super) fn picked_pool(
    o: &RunOpts,
    pool: Vec<NodeAddr>,
    lab_name: &dyn Fn(&str) -> Option<NodeAddr>,
) -> Result<(Vec<NodeAddr>, Option<PickView>), UsageError> {
    let view = |rule: &str, seed| PickView {
        rule: rule.to_string(),
        scan_file: o.relays_from.as_ref().map(|p| p.display().to_string()),
        scan_file_modified_unix: o.relays_from.as_ref().and_then(|p| modified_unix(p)),
        seed,
    };
    let pool = match &o.relays_from {
        Some(path) => ranked_pool(path, lab_name)?,
        None if o.pick == Some(Pick::Fastest) => return Err(UsageError(
            "--pick fastest needs --relays-from FILE (the ranking `mux-bw scan --out FILE` writes)"
                .to_string(),
        )),
        None => pool,
    };
    match (o.pick, &o.relays_from) {
        (Some(Pick::Random), _) => {
            let seed = random_seed()?;
            Ok((shuffled(pool, seed), Some(view("random", Some(seed)))))
        }
        (_, Some(_)) => Ok((pool, Some(view("fastest", None)))),
        (_, None) => Ok((pool, None)),
    }
}

/// The measured relays of a scan ranking, fastest first.
fn ranked_pool(
    path: &Path,
    lab_name: &dyn Fn(&str) -> Option<NodeAddr>,
) -> Result<Vec<NodeAddr>, UsageError> {
    let name = path.display();
    let cannot = |why: String| UsageError(format!("cannot read --relays-from '{name}': {why}"));
    let bytes =
        crate::files::read_bounded(path, MAX_SCAN_FILE).map_err(|e| cannot(e.to_string()))?;
    let scan: ScanSummary = serde_json::from_slice(&bytes)
        .map_err(|e| cannot(format!("not a scan ranking (scan --out): {e}")))?;
    let mut pool = Vec::new();
    for row in scan.ranking.iter().filter(|r| r.cause.is_none()) {
        let by_name = row.relay.as_deref().and_then(lab_name);
        let node = match by_name {
            Some(n) => n,
            None => row
                .address
                .parse::<NodeAddr>()
                .map_err(|e| cannot(e.to_string()))?,
        };
        pool.push(node);
    }
    if pool.is_empty() {
        return Err(cannot("it ranks no measured relay".to_string()));
    }
    Ok(pool)
}

/// When `path` was last written, in Unix seconds.
fn modified_unix(path: &Path) -> Option<u64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn random_seed() -> Result<u64, UsageError> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| UsageError("no system randomness for --pick random".to_string()))?;
    Ok(u64::from_le_bytes(raw))
}

/// Fisher-Yates over `pool` driven by xorshift64* from `seed`: the same seed, the same order.
fn shuffled(mut pool: Vec<NodeAddr>, seed: u64) -> Vec<NodeAddr> {
    let mut x = seed | 1;
    for i in (1..pool.len()).rev() {
        let j = (xorshift64star(&mut x) % (i as u64 + 1)) as usize;
        pool.swap(i, j);
    }
    pool
}

/// Largest relays file read: about 50 000 URIs.
const MAX_RELAYS_FILE: u64 = 4 << 20;

fn read_relays_file(path: &Path) -> Result<Vec<NodeAddr>, UsageError> {
    let cannot = |why: String| {
        UsageError(format!(
            "cannot read relays file '{}': {why}",
            path.display()
        ))
    };
    let bytes =
        crate::files::read_bounded(path, MAX_RELAYS_FILE).map_err(|e| cannot(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(line.parse().map_err(|e| {
            UsageError(format!(
                "relays file '{}', line {}: {e}",
                path.display(),
                i + 1
            ))
        })?);
    }
    Ok(out)
}

/// The shape of one measurement: how many routes, how long, which way.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape<'a> {
    pub(super) routes: usize,
    pub(super) min_hops: usize,
    pub(super) mode: Mode,
    pub(super) via: &'a [String],
}

impl RunOpts {
    pub(super) fn shape(&self) -> Shape<'_> {
        Shape {
            routes: self.routes,
            min_hops: self.min_hops,
            mode: self.mode,
            via: &self.via,
        }
    }
}

/// Validates flags into a `RunConfig`: plans routes, resolves `--via` names. No I/O but DNS.
/// `lab_name` resolves lab relay names like `r3`.
pub(super) fn build_config(
    dst: NodeAddr,
    pool: Vec<NodeAddr>,
    shape: Shape<'_>,
    o: &MeasureOpts,
    lab_name: &dyn Fn(&str) -> Option<NodeAddr>,
) -> Result<RunConfig, UsageError> {
    let mut pins = BTreeMap::new();
    for v in shape.via {
        let (idx, nodes) = parse_via(v, &pool, lab_name)?;
        if pins.insert(idx, nodes).is_some() {
            return Err(UsageError(format!(
                "invalid --via '{v}': route {idx} pinned twice"
            )));
        }
    }
    let plan = plan::plan(&PlanRequest {
        dst,
        pool: pool.clone(),
        routes: shape.routes,
        min_hops: shape.min_hops,
        pins,
        allow_overlap: o.allow_overlap,
    })
    .map_err(UsageError::of)?;
    let stripe = stripe_config(&o.stripe, shape.mode)?;
    Ok(RunConfig {
        dst,
        relays: pool,
        routes: plan,
        min_hops: shape.min_hops,
        allow_overlap: o.allow_overlap,
        mode: shape.mode,
        // A sized transfer lasts until its bytes arrived (or every route failed).
        duration: if o.stripe.bytes.is_some() {
            WEEK
        } else {
            o.duration
        },
        omit: o.omit,
        interval: o.interval,
        setup_timeout: o.setup_timeout,
        io_timeout: o.io_timeout,
        stall_timeout: o.stall_timeout,
        probe_rtt: o.probe_rtt.is_some(),
        probe_all: o.probe_rtt.is_some_and(|s| s == ProbeScope::All),
        probe_interval: o.probe_interval,
        token: token_bytes(o.token.as_deref())?.unwrap_or_default(),
        redial: o.redial,
        tuning: o.tuning.tuning(),
        links: None,
        load_started: CancellationToken::new(),
        warnings: Vec::new(),
        pick: None,
        stripe,
    })
}

/// `--stripe` and its settings, checked against each other and the mode.
fn stripe_config(a: &StripeArgs, mode: Mode) -> Result<Option<StripeConfig>, UsageError> {
    if !a.stripe {
        return Ok(None);
    }
    if mode != Mode::Up {
        return Err(UsageError(format!(
            "--stripe measures an upload: it needs --mode up, not --mode {}",
            mode.as_str()
        )));
    }
    let segment = u32::try_from(a.segment)
        .ok()
        .filter(|s| *s <= MAX_SEGMENT)
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --segment {}: at most {MAX_SEGMENT} bytes (1M)",
                a.segment
            ))
        })?;
    let window = u32::try_from(a.reorder_window)
        .ok()
        .filter(|w| {
            (2 * u64::from(segment)..=u64::from(MAX_REORDER_WINDOW)).contains(&u64::from(*w))
        })
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --reorder-window {}: from 2 segments ({} bytes) to 256M",
                a.reorder_window,
                2 * segment
            ))
        })?;
    Ok(Some(StripeConfig {
        scheduler: a.scheduler,
        segment,
        window,
        bytes: a.bytes,
    }))
}

/// The lab's emulated links as what a run dials through.
pub(super) fn wired(links: Links) -> Arc<dyn PathWiring> {
    Arc::new(links)
}

/// `IDX=NODE[,NODE..]` where NODE is a URI, a node id from the pool, or a lab name.
fn parse_via(
    v: &str,
    pool: &[NodeAddr],
    lab_name: &dyn Fn(&str) -> Option<NodeAddr>,
) -> Result<(usize, Vec<NodeAddr>), UsageError> {
    let bad = |why: String| UsageError(format!("invalid --via '{v}': {why}"));
    let (idx, list) = v
        .split_once('=')
        .ok_or_else(|| bad("expected IDX=NODE[,NODE..]".to_string()))?;
    let idx: usize = idx
        .trim()
        .parse()
        .map_err(|_| bad(format!("route index '{idx}' is not a number")))?;
    let mut nodes = Vec::new();
    for name in list.split(',').map(str::trim) {
        let node = if let Some(n) = lab_name(name) {
            n
        } else if is_id_prefix(name) {
            by_id_prefix(name, pool).map_err(bad)?
        } else {
            name.parse::<NodeAddr>().map_err(|e| bad(e.to_string()))?
        };
        nodes.push(node);
    }
    Ok((idx, nodes))
}

/// Shortest id prefix `--via` accepts: the 8 hex digits the tool prints for a node.
const MIN_ID_PREFIX: usize = 8;

/// 8 to 32 hex digits: a node id or a prefix of one, as printed in human output.
fn is_id_prefix(s: &str) -> bool {
    (MIN_ID_PREFIX..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The one relay of the pool whose id starts with `prefix`; otherwise why not, listing the
/// candidates (those matching, or the whole pool when none does).
fn by_id_prefix(prefix: &str, pool: &[NodeAddr]) -> Result<NodeAddr, String> {
    let prefix = prefix.to_ascii_lowercase();
    let matching: Vec<&NodeAddr> = pool
        .iter()
        .filter(|p| p.id.to_string().starts_with(&prefix))
        .collect();
    let list = |nodes: &[&NodeAddr]| {
        let ids: Vec<String> = nodes.iter().take(16).map(|n| n.id.to_string()).collect();
        let more = nodes.len().saturating_sub(ids.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{}{more}", ids.join(", "))
    };
    match matching.as_slice() {
        [one] => Ok(**one),
        [] if pool.is_empty() => Err(format!(
            "node id {prefix} given, but the relay list is empty"
        )),
        [] => Err(format!(
            "no relay's id starts with {prefix}; the relays are {}",
            list(&pool.iter().collect::<Vec<_>>())
        )),
        many => Err(format!(
            "{prefix} is the start of {} relay ids: {}; give more digits",
            many.len(),
            list(many)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::identity::NodeId;

    #[test]
    fn via_accepts_an_unambiguous_id_prefix_of_eight_digits() {
        let node = |id: [u8; 16]| NodeAddr {
            id: NodeId(id),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let mut a = [0x05; 16];
        a[4] = 0x11;
        let mut b = [0x05; 16];
        b[4] = 0x22;
        let pool = vec![node(a), node(b), node([0x77; 16])];
        let none = |_: &str| None;
        // The 8 digits the tool prints pick one relay; upper case too.
        let (_, n) = parse_via("1=77777777", &pool, &none).unwrap();
        assert_eq!(n, vec![node([0x77; 16])]);
        let (_, n) = parse_via("1=0505050511", &pool, &none).unwrap();
        assert_eq!(n, vec![node(a)]);
        let (_, n) = parse_via("1=0505050522", &pool, &none).unwrap();
        assert_eq!(n, vec![node(b)]);
        // Ambiguous: both candidates listed.
        let err = parse_via("1=05050505", &pool, &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("start of 2 relay ids"), "{err}");
        assert!(err.contains(&NodeId(a).to_string()) && err.contains(&NodeId(b).to_string()));
        // Unknown: the pool listed.
        let err = parse_via("1=abcdef01", &pool, &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no relay's id starts with abcdef01"), "{err}");
        assert!(err.contains(&NodeId([0x77; 16]).to_string()), "{err}");
        // Shorter than 8 digits is not an id.
        assert!(parse_via("1=0505", &pool, &none).is_err());
    }

    #[test]
    fn via_accepts_ids_lab_names_and_uris() {
        let node = |n: u8| NodeAddr {
            id: NodeId([n; 16]),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let pool = vec![node(1), node(2)];
        let lab = |s: &str| (s == "r1").then(|| node(2));
        let (i, n) = parse_via(&format!("3={},r1", node(1).id), &pool, &lab).unwrap();
        assert_eq!((i, n), (3, vec![node(1), node(2)]));
        let (_, n) = parse_via(&format!("0={}", node(7).uri()), &pool, &lab).unwrap();
        assert_eq!(n, vec![node(7)]);
        for bad in ["x=r1", "2", "1=nonsense", &format!("1={}", node(9).id)] {
            let err = parse_via(bad, &pool, &lab).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn relays_file_skips_comments_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relays");
        let id = NodeId([1; 16]);
        std::fs::write(&path, format!("# pool\n\nmbw://{id}@127.0.0.1:1 # r0\n")).unwrap();
        assert_eq!(read_relays_file(&path).unwrap().len(), 1);
        std::fs::write(&path, "mbw://bad\n").unwrap();
        let err = read_relays_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
