//! The application close codes of an ewx QUIC connection: why the broker (or a client)
//! ended it, and whether trying again can help.

/// Why a connection was closed (the QUIC application error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// An orderly close: shutdown, or the client is done.
    Normal = 0,
    /// The peer's key is not in the roster.
    NotInRoster = 1,
    /// The node was revoked or removed from the roster.
    Revoked = 2,
    /// A delivery lane failed; the subscriber resumes from its cursor.
    LaneFailed = 3,
    /// The node has as many connections as the broker allows.
    TooManyConnections = 4,
}

impl CloseCode {
    /// Every code, in numeric order.
    pub const ALL: [CloseCode; 5] = [
        CloseCode::Normal,
        CloseCode::NotInRoster,
        CloseCode::Revoked,
        CloseCode::LaneFailed,
        CloseCode::TooManyConnections,
    ];

    /// The code on the wire.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The code a peer sent, if it is one of ours.
    pub fn from_varint(code: quinn::VarInt) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.varint() == code)
    }

    /// A short reason phrase sent with the code.
    pub fn reason(self) -> &'static [u8] {
        match self {
            CloseCode::Normal => b"bye",
            CloseCode::NotInRoster => b"not in roster",
            CloseCode::Revoked => b"revoked",
            CloseCode::LaneFailed => b"delivery lane failed",
            CloseCode::TooManyConnections => b"too many connections for this node",
        }
    }

    /// After this close, reconnecting as the same node cannot succeed until the roster
    /// changes: a client gives up instead of retrying.
    pub fn is_final(self) -> bool {
        matches!(self, CloseCode::NotInRoster | CloseCode::Revoked)
    }

    /// Close `conn` with this code and its reason phrase.
    pub fn close(self, conn: &quinn::Connection) {
        conn.close(self.varint(), self.reason());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_only_roster_refusals_are_final() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_varint(c.varint()), Some(c));
        }
        assert_eq!(CloseCode::from_varint(quinn::VarInt::from_u32(99)), None);
        let finals: Vec<_> = CloseCode::ALL
            .into_iter()
            .filter(|c| c.is_final())
            .collect();
        assert_eq!(finals, [CloseCode::NotInRoster, CloseCode::Revoked]);
    }
}
