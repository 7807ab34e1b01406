//! Multi-part operation state, carried by the client in a sealed state blob (grep11 spec §9).
//!
//! Encoding (inside the seal): operation byte, u32 length + prost-encoded `Mechanism`, u32
//! length + the key blob, then the input buffered so far. The key blob is re-opened at every
//! step, so a state is only as good as its key.

use prost::Message;
use zeroize::Zeroizing;

use crate::attrs::take;
use crate::ck::rv;
use crate::error::{Result, ck};
use crate::proto;

/// Most input one multi-part operation may buffer.
pub const MAX_BUFFERED: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Digest = 1,
    Encrypt = 2,
    Decrypt = 3,
    Sign = 4,
    Verify = 5,
}

pub struct State {
    pub op: Op,
    pub mech: proto::Mechanism,
    pub key: Vec<u8>,
    pub data: Zeroizing<Vec<u8>>,
}

impl State {
    pub fn new(op: Op, mech: proto::Mechanism, key: Vec<u8>) -> State {
        State {
            op,
            mech,
            key,
            data: Zeroizing::new(Vec::new()),
        }
    }

    /// Appends input, within [`MAX_BUFFERED`].
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.data.len() + data.len() > MAX_BUFFERED {
            return Err(ck(rv::CKR_DATA_LEN_RANGE, "multi-part input exceeds 1 MiB"));
        }
        self.data.extend_from_slice(data);
        Ok(())
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mech = self.mech.encode_to_vec();
        let mut out = Zeroizing::new(Vec::with_capacity(
            9 + mech.len() + self.key.len() + self.data.len(),
        ));
        out.push(self.op as u8);
        out.extend_from_slice(&(mech.len() as u32).to_be_bytes());
        out.extend_from_slice(&mech);
        out.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes a state and checks it belongs to `op`.
    pub fn decode(b: &[u8], op: Op) -> Result<State> {
        let bad = || ck(rv::CKR_SAVED_STATE_INVALID, "malformed state");
        let mut b = b;
        let found = take(&mut b, 1).ok_or_else(bad)?[0];
        if found != op as u8 {
            return Err(ck(
                rv::CKR_OPERATION_NOT_INITIALIZED,
                "the state belongs to another operation",
            ));
        }
        let len = u32::from_be_bytes(
            take(&mut b, 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let mech = proto::Mechanism::decode(take(&mut b, len as usize).ok_or_else(bad)?)
            .map_err(|_| bad())?;
        let len = u32::from_be_bytes(
            take(&mut b, 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let key = take(&mut b, len as usize).ok_or_else(bad)?.to_vec();
        Ok(State {
            op,
            mech,
            key,
            data: Zeroizing::new(b.to_vec()),
        })
    }
}
