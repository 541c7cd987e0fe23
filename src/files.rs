//! Reading user files whole, never more than a stated limit: a path naming a device
//! (`/dev/zero`) or a huge file is refused with the limit instead of filling memory or hanging.

use std::io::Read;
use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// There was more than the limit (bytes) to read.
    #[error("larger than {}, the limit for this file", fmt_limit(*.0))]
    TooLarge(u64),
}

impl ReadError {
    /// The file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads the file at `path` whole, refusing it if it holds more than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_all_bounded(std::fs::File::open(path)?, limit)
}

/// Reads `r` to its end, refusing more than `limit` bytes (it reads at most `limit + 1`).
pub fn read_all_bounded(r: impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(buf)
}

/// `65536` → `64 KiB`: a limit in the largest binary unit that divides it.
pub fn fmt_limit(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_more() {
        assert_eq!(read_all_bounded(&b"abcd"[..], 4).unwrap(), b"abcd");
        let err = read_all_bounded(&b"abcde"[..], 4).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge(4)), "{err}");
        assert_eq!(
            err.to_string(),
            "larger than 4 bytes, the limit for this file"
        );
        // An endless source is cut at the limit.
        let err = read_all_bounded(std::io::repeat(0), 64 << 10).unwrap_err();
        assert!(err.to_string().contains("64 KiB"), "{err}");
        assert!(read_bounded(Path::new("/nonexistent/x"), 1)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn limits_print_in_binary_units() {
        assert_eq!(fmt_limit(64 << 10), "64 KiB");
        assert_eq!(fmt_limit(4 << 20), "4 MiB");
        assert_eq!(fmt_limit(1 << 30), "1 GiB");
        assert_eq!(fmt_limit(1000), "1000 bytes");
    }
}
