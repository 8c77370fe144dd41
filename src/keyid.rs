//! Key ids, stored compactly: every instance holds the whole desired state (DESIGN §2.8: 1,000,000
//! aliases × 4 targets in 250 MB), so the common shapes avoid a heap allocation each: canonical
//! lowercase UUIDs and `mrk-` ids as 16 bytes, other ids up to 30 bytes inline (Alibaba `key-…`).

use std::fmt;

const INLINE: usize = 30;

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeyId {
    Uuid([u8; 16]),
    Mrk([u8; 16]),
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

/// 32 lowercase hex digits (hyphens skipped where `skip` says) → 16 bytes.
fn hex16(b: &[u8], skip: &[usize]) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        if n == 32 {
            return None;
        }
        out[n / 2] |= if n % 2 == 0 { v << 4 } else { v };
        n += 1;
    }
    (n == 32).then_some(out)
}

impl KeyId {
    /// Only shapes that print back byte for byte are packed (lowercase hex).
    pub fn new(s: &str) -> KeyId {
        let b = s.as_bytes();
        const HYPHENS: [usize; 4] = [8, 13, 18, 23];
        if b.len() == 36 && HYPHENS.iter().all(|&i| b[i] == b'-') {
            if let Some(v) = hex16(b, &HYPHENS) {
                return KeyId::Uuid(v);
            }
        }
        if let Some(v) = s.strip_prefix("mrk-").and_then(|h| hex16(h.as_bytes(), &[])) {
            return KeyId::Mrk(v);
        }
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            return KeyId::Inline { len: b.len() as u8, buf };
        }
        KeyId::Heap(s.into())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyId::Uuid(v) => {
                for (i, x) in v.iter().enumerate() {
                    if [4, 6, 8, 10].contains(&i) {
                        f.write_str("-")?;
                    }
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
            KeyId::Mrk(v) => {
                f.write_str("mrk-")?;
                v.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            // Built from a &str, so always UTF-8.
            KeyId::Inline { len, buf } => f.write_str(std::str::from_utf8(&buf[..*len as usize]).unwrap_or_default()),
            KeyId::Heap(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl From<&str> for KeyId {
    fn from(s: &str) -> Self {
        KeyId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_shape() {
        for (s, packed) in [
            ("1234abcd-12ab-34cd-56ef-1234567890ab", true),
            ("mrk-1234abcd12ab34cd56ef1234567890ab", true),
            ("1234ABCD-12ab-34cd-56ef-1234567890ab", false),
            ("key-hzz62f1cb66fa42qo3ht4", false),
            ("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", false),
            ("", false),
            ("mrk-12", false),
            ("1234abcd-12ab-34cd-56ef-1234567890a-", false),
        ] {
            let k = KeyId::new(s);
            assert_eq!(k.to_string(), s);
            assert_eq!(matches!(k, KeyId::Uuid(_) | KeyId::Mrk(_)), packed, "{s}");
        }
        assert!(matches!(KeyId::new("key-hzz62f1cb66fa42qo3ht4"), KeyId::Inline { .. }));
        assert_eq!(std::mem::size_of::<KeyId>(), 32);
    }
}
