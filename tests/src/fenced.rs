//! A fenced resource: the protected side of a lock, as the README's "Safety" section shows.

/// A store that accepts a write only with a fencing token at least as large as the largest
/// it has accepted, so a holder that lost its lock (paused past its TTL) cannot overwrite the
/// new holder's work.
#[derive(Debug, Default)]
pub struct FencedStore {
    highest: Option<u64>,
    /// Tokens of the accepted writes, in order.
    pub accepted: Vec<u64>,
}

/// A write refused because its token is older than one already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    /// The refused token.
    pub token: u64,
    /// The largest token accepted so far.
    pub highest: u64,
}

impl FencedStore {
    /// Accepts a write fenced by `token`, or refuses it as stale.
    pub fn write(&mut self, token: u64) -> Result<(), Stale> {
        if let Some(highest) = self.highest {
            if token < highest {
                return Err(Stale { token, highest });
            }
        }
        self.highest = Some(token);
        self.accepted.push(token);
        Ok(())
    }
}
