//! Who received and acknowledged a message: its `Published` entry and every `Receipt`
//! entry for it, collected while a log's entries go by (from whatever source).

use crate::error::Result;
use crate::ids::MessageId;
use crate::receipt::Receipt;

use super::entry::{Entry, Event};

/// Collects a message's log index and its receipts.
#[derive(Debug)]
pub struct ReceiptScan {
    id: MessageId,
    published: Option<u64>,
    receipts: Vec<Receipt>,
}

impl ReceiptScan {
    /// Look for `id`.
    pub fn new(id: MessageId) -> Self {
        Self {
            id,
            published: None,
            receipts: Vec::new(),
        }
    }

    /// Look at the next entry.
    ///
    /// # Errors
    /// If it does not decode.
    pub fn observe(&mut self, bytes: &[u8]) -> Result<()> {
        match Entry::decode(bytes)?.event {
            Event::Published { id, log_index, .. } if id == self.id => {
                self.published = Some(log_index);
            }
            Event::Receipt(r) if r.id == self.id => self.receipts.push(r),
            _ => {}
        }
        Ok(())
    }

    /// The message's log index and its receipts (unverified: check each against the
    /// roster), or `None` if the message was not among the entries seen.
    pub fn finish(self) -> Option<(u64, Vec<Receipt>)> {
        Some((self.published?, self.receipts))
    }
}
