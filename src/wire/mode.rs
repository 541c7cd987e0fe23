//! The data pattern of a route (`up`, `down`, `bidir`, `echo`): its names on the command line
//! and in events, its code on the wire, and which way payload flows.

/// What the destination does with the route's stream.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Client sends, destination sinks and reports delivered bytes back.
    #[default]
    Up,
    /// Destination sends, client sinks.
    Down,
    /// Both at once on the same stream.
    Bidir,
    /// Destination echoes what the client sends; the client keeps a window of bytes in flight.
    Echo,
}

impl Mode {
    /// The name used on the command line and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::Bidir => "bidir",
            Mode::Echo => "echo",
        }
    }

    /// Whether the client sends payload (and the destination reports what arrived).
    pub fn client_sends(self) -> bool {
        matches!(self, Mode::Up | Mode::Bidir | Mode::Echo)
    }

    /// Whether payload flows back to the client.
    pub fn client_receives(self) -> bool {
        matches!(self, Mode::Down | Mode::Bidir | Mode::Echo)
    }

    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Mode::Up => 0,
            Mode::Down => 1,
            Mode::Bidir => 2,
            Mode::Echo => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Mode::Up),
            1 => Some(Mode::Down),
            2 => Some(Mode::Bidir),
            3 => Some(Mode::Echo),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_modes_round_trip() {
        for m in [Mode::Up, Mode::Down, Mode::Bidir, Mode::Echo] {
            assert_eq!(Mode::from_code(m.code()), Some(m));
        }
    }
}
