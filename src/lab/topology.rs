//! Which emulated link each lab relay gets: one spec for all (`--link-rate 50mbit`), one per
//! relay in order (`--link-rate 10mbit,20mbit,40mbit`), or a TOML file (`--topology FILE`) with
//! defaults, the direct link and each relay's link by name. Pure: it reads text, not files.
//!
//! A relay's spec shapes the link that leads to it, and for the last relay of a route also its
//! link to the destination (docs/LAB.md, "Uneven links").

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::lab::shaper::{LinkSpec, Loss, Rate, QUEUE_TIME};

/// Longest one-way delay or queue a topology may give a link.
pub const MAX_LINK_TIME: Duration = Duration::from_secs(10);

/// Every emulated link of one lab.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkPlan {
    /// The client–destination link of direct routes.
    pub direct: LinkSpec,
    /// Each relay's link, by lab index (`rK` is `relays[K]`).
    pub relays: Vec<LinkSpec>,
}

impl LinkPlan {
    /// The same `relay` link for each of `count` relays.
    pub fn uniform(relay: LinkSpec, direct: LinkSpec, count: usize) -> Self {
        LinkPlan {
            direct,
            relays: vec![relay; count],
        }
    }
}

/// One `[section]` of a topology file; every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    rate: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    /// Percent, like `--link-loss`.
    loss: Option<Spanned<f64>>,
    queue: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Section,
    #[serde(default)]
    direct: Section,
    #[serde(default)]
    relay: BTreeMap<Spanned<String>, Section>,
}

/// Line (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a topology file's `text` (named `name` in errors) for a lab of `relays` relays.
/// Errors are one line naming the file, the line and the key.
pub fn parse(name: &str, text: &str, relays: usize) -> Result<LinkPlan, String> {
    let at = |offset: usize| format!("{name} line {}", line_of(text, offset));
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or_else(|| name.to_string(), |s| at(s.start));
        let message = e.message().replace('\n', " ");
        format!("{line}: {message}")
    })?;
    let defaults = spec(&file.defaults, LinkSpec::transparent(), &at, "defaults")?;
    let direct = spec(&file.direct, defaults, &at, "direct")?;
    let mut plan = LinkPlan::uniform(defaults, direct, relays);
    for (key, section) in &file.relay {
        let index = key
            .get_ref()
            .strip_prefix('r')
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| *k < relays)
            .ok_or_else(|| {
                let names = match relays {
                    0 => "the lab has no relays".to_string(),
                    n => format!("the lab has r0..r{}", n - 1),
                };
                format!(
                    "{}: unknown relay '{}' in [relay.{}] ({names})",
                    at(key.span().start),
                    key.get_ref(),
                    key.get_ref()
                )
            })?;
        let section_name = format!("relay.{}", key.get_ref());
        plan.relays[index] = spec(section, defaults, &at, &section_name)?;
    }
    Ok(plan)
}

/// A section's values over `base`; a bad value names its line, section and key.
fn spec(
    s: &Section,
    base: LinkSpec,
    at: &dyn Fn(usize) -> String,
    section: &str,
) -> Result<LinkSpec, String> {
    let bad = |v: &Spanned<String>, key: &str, why: String| {
        format!("{}: [{section}] {key}: {why}", at(v.span().start))
    };
    let mut out = base;
    if let Some(v) = &s.rate {
        out.rate = Some(v.get_ref().parse::<Rate>().map_err(|e| bad(v, "rate", e))?);
    }
    if let Some(v) = &s.delay {
        out.delay = link_time(v.get_ref()).map_err(|e| bad(v, "delay", e))?;
    }
    if let Some(v) = &s.queue {
        out.queue = link_time(v.get_ref()).map_err(|e| bad(v, "queue", e))?;
        if out.queue.is_zero() {
            return Err(bad(v, "queue", "expected a queue above 0s".to_string()));
        }
    }
    if let Some(v) = &s.loss {
        let pct = *v.get_ref();
        out.loss_pct = pct
            .to_string()
            .parse::<Loss>()
            .map_err(|e| format!("{}: [{section}] loss: {e}", at(v.span().start)))?
            .0;
    }
    Ok(out)
}

/// A delay or queue length: a duration from 0 to `MAX_LINK_TIME`.
fn link_time(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration '{s}': expected e.g. 5ms or 1s ({e})"))?;
    if d > MAX_LINK_TIME {
        return Err(format!("'{s}' is above the limit of 10s"));
    }
    Ok(d)
}

/// One value for every relay, or one per relay in order: the shorthand of `--link-rate` and
/// `--link-delay`. `None` when no value was given.
pub fn per_relay<T: Copy>(
    values: &[T],
    relays: usize,
    flag: &str,
) -> Result<Option<Vec<T>>, String> {
    match values {
        [] => Ok(None),
        [one] => Ok(Some(vec![*one; relays])),
        many if many.len() == relays => Ok(Some(many.to_vec())),
        many => Err(format!(
            "{flag} has {} values for {relays} relays: give one for all, or one per relay",
            many.len()
        )),
    }
}

impl LinkSpec {
    /// A link that changes nothing (no rate limit, delay or loss; the default queue).
    pub fn transparent() -> Self {
        LinkSpec {
            rate: None,
            delay: Duration::ZERO,
            loss_pct: 0.0,
            queue: QUEUE_TIME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[defaults]
rate = "50mbit"
delay = "5ms"

[direct]
rate = "100mbit"

[relay.r0]
rate = "10mbit"
delay = "40ms"

[relay.r3]
rate = "80mbit"
loss = 0.5   # percent
"#;

    #[test]
    fn the_example_gives_each_relay_its_link_over_the_defaults() {
        let plan = parse("t.toml", EXAMPLE, 4).unwrap();
        let ms = Duration::from_millis;
        assert_eq!(plan.direct.rate, Some(Rate(100_000_000)));
        assert_eq!(plan.direct.delay, ms(5));
        let rates: Vec<u64> = plan.relays.iter().map(|l| l.rate.unwrap().0).collect();
        assert_eq!(rates, [10_000_000, 50_000_000, 50_000_000, 80_000_000]);
        assert_eq!(plan.relays[0].delay, ms(40));
        assert_eq!(plan.relays[1].delay, ms(5));
        assert_eq!(plan.relays[3].loss_pct, 0.5);
        assert_eq!(plan.relays[2].queue, QUEUE_TIME);
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let cases = [
            (
                "[defaults]\nrate = \"50mbit\"\nburst = 3\n",
                "t.toml line 3: unknown field `burst`",
            ),
            (
                "[relay.r9]\nrate = \"1mbit\"\n",
                "t.toml line 1: unknown relay 'r9' in [relay.r9] (the lab has r0..r3)",
            ),
            ("[relay.x]\n", "unknown relay 'x'"),
            (
                "[direct]\n\nrate = \"fast\"\n",
                "t.toml line 3: [direct] rate: invalid rate 'fast'",
            ),
            (
                "[relay.r1]\ndelay = \"soon\"\n",
                "t.toml line 2: [relay.r1] delay: invalid duration 'soon'",
            ),
            (
                "[relay.r1]\nloss = 120.0\n",
                "t.toml line 2: [relay.r1] loss: invalid loss '120'",
            ),
            (
                "[relay.r1]\nqueue = \"0s\"\n",
                "t.toml line 2: [relay.r1] queue: expected a queue above 0s",
            ),
            ("[mesh]\n", "t.toml line 1: unknown field `mesh`"),
            ("rate = 1\n", "t.toml line 1: unknown field `rate`"),
        ];
        for (text, want) in cases {
            let err = parse("t.toml", text, 4).unwrap_err();
            assert!(
                err.starts_with(want) || err.contains(want),
                "{text:?}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn one_value_or_one_per_relay() {
        assert_eq!(per_relay::<u8>(&[], 3, "--x"), Ok(None));
        assert_eq!(per_relay(&[7], 3, "--x"), Ok(Some(vec![7, 7, 7])));
        assert_eq!(per_relay(&[1, 2, 3], 3, "--x"), Ok(Some(vec![1, 2, 3])));
        let err = per_relay(&[1, 2], 3, "--link-rate").unwrap_err();
        assert_eq!(
            err,
            "--link-rate has 2 values for 3 relays: give one for all, or one per relay"
        );
    }
}
