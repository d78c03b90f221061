//! How a lane begins: NEW (a session's first lane, with its secret) or
//! JOIN (a later lane, with a token derived from that secret).

use super::*;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// A session's shared secret, sent in NEW; everything else derives from it.
#[derive(Clone)]
pub struct SessionSecret(Zeroizing<[u8; 32]>);

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// Identifies a braid in JOIN frames.
pub type Token = [u8; 16];

impl SessionSecret {
    /// Wraps 32 random bytes.
    pub fn new(bytes: [u8; 32]) -> SessionSecret {
        SessionSecret(Zeroizing::new(bytes))
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..])
            .expect("HMAC takes any key length");
        mac.update(b"samizdat lanes ");
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// The token later lanes name the braid by.
    pub fn token(&self) -> Token {
        let k = self.derive(b"token");
        let mut token = Token::default();
        token.copy_from_slice(&k[..16]);
        token
    }

    fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// How a lane begins (its first frame).
#[derive(Debug, Clone)]
pub enum Opening {
    /// A new braid.
    New {
        /// Its secret.
        secret: SessionSecret,
        /// The lane's id.
        lane: u32,
        /// Its budget (`None`: unlimited).
        budget: Option<u32>,
    },
    /// A lane for an existing braid.
    Join {
        /// Which braid.
        token: Token,
        /// The lane's id.
        lane: u32,
        /// Its budget.
        budget: Option<u32>,
        /// What the client has received.
        received: u64,
    },
}

fn budget_of(b: u32) -> Option<u32> {
    (b != 0).then_some(b.max(MIN_BUDGET))
}

/// Splits a lane's first record plaintext into its opening and the frames
/// after it.
pub fn opening(plaintext: &[u8]) -> Result<(Opening, &[u8]), LaneError> {
    let (first, used) = LaneFrame::decode(plaintext)?;
    let opening = match first {
        LaneFrame::New {
            secret,
            lane,
            budget,
        } => Opening::New {
            secret: SessionSecret::new(secret),
            lane,
            budget: budget_of(budget),
        },
        LaneFrame::Join {
            token,
            lane,
            budget,
            received,
        } => Opening::Join {
            token,
            lane,
            budget: budget_of(budget),
            received,
        },
        _ => return Err(LaneError::Opening),
    };
    Ok((opening, &plaintext[used..]))
}

/// The opening frame a client sends first on a lane.
pub fn encode_opening(opening: &Opening, out: &mut Vec<u8>) {
    match opening {
        Opening::New {
            secret,
            lane,
            budget,
        } => LaneFrame::New {
            secret: *secret.bytes(),
            lane: *lane,
            budget: budget.unwrap_or(0),
        }
        .encode(out),
        Opening::Join {
            token,
            lane,
            budget,
            received,
        } => LaneFrame::Join {
            token: *token,
            lane: *lane,
            budget: budget.unwrap_or(0),
            received: *received,
        }
        .encode(out),
    }
}
