//! Messages: whole datagrams of any size up to the peer's limit, delivered
//! reliably and in order, with optional delivery confirmation ([`Messages`],
//! the session's part for them). Their bytes take session credit like stream
//! bytes (module `flow`).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::flow::Credit;
use super::frame::{Frame, MESSAGE_CONFIRM, MESSAGE_FIN};
use super::{Event, MessageId, ProtocolError, ReceivedMessage, SendMessageError};

#[derive(Debug)]
struct OutMessage {
    id: u64,
    data: Bytes,
    confirm: bool,
}

#[derive(Debug)]
struct InMessage {
    id: u64,
    confirm: bool,
    data: BytesMut,
}

/// Messages queued to send and received, both bounded.
#[derive(Debug, Default)]
pub(super) struct Messages {
    out: VecDeque<OutMessage>,
    /// How much of the first queued message went out.
    out_offset: usize,
    /// Queued bytes not yet in a packet.
    out_bytes: u64,
    next_id: u64,
    /// A `queue` was refused: owe a `MessageWritable`.
    blocked: bool,
    /// The message being received.
    partial: Option<InMessage>,
    /// Complete messages the application has not taken, with their length.
    complete: VecDeque<(InMessage, usize)>,
    /// Message bytes buffered (partial and complete).
    in_bytes: u64,
    /// Message bytes whose credit waits for the application to take them.
    credit_deferred: u64,
    next_in: u64,
}

impl Messages {
    /// Queues a message of at most `max` bytes (the peer's limit). The queue
    /// holds one message of any size, or several up to the limit.
    pub fn queue(
        &mut self,
        data: Bytes,
        confirm: bool,
        max: u32,
    ) -> Result<MessageId, SendMessageError> {
        if data.len() > max as usize {
            return Err(SendMessageError::TooLarge { max });
        }
        if !self.out.is_empty() && self.out_bytes + data.len() as u64 > u64::from(max) {
            self.blocked = true;
            return Err(SendMessageError::Blocked);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.out_bytes += data.len() as u64;
        self.out.push_back(OutMessage { id, data, confirm });
        Ok(MessageId(id))
    }

    /// Queued message bytes not yet in a packet.
    pub fn out_bytes(&self) -> u64 {
        self.out_bytes
    }

    /// The next chunk of the first queued message: at most `room` bytes, within
    /// the session's credit. `None` when nothing is queued or no credit is left.
    pub fn next_chunk(
        &mut self,
        room: usize,
        credit: &mut Credit,
        events: &mut VecDeque<Event>,
    ) -> Option<Frame> {
        let msg = self.out.front()?;
        let left = msg.data.len() - self.out_offset;
        let n = left
            .min(room)
            .min(usize::try_from(credit.available()).unwrap_or(usize::MAX));
        if n == 0 && left > 0 {
            return None;
        }
        let chunk = msg.data.slice(self.out_offset..self.out_offset + n);
        let fin = n == left;
        let mut flags = if fin { MESSAGE_FIN } else { 0 };
        if msg.confirm {
            flags |= MESSAGE_CONFIRM;
        }
        let id = msg.id;
        credit.spent(n as u64);
        self.out_bytes -= n as u64;
        if fin {
            self.out.pop_front();
            self.out_offset = 0;
            if self.blocked && self.out.is_empty() {
                self.blocked = false;
                events.push_back(Event::MessageWritable);
            }
        } else {
            self.out_offset += n;
        }
        Some(Frame::Message { id, flags, chunk })
    }

    /// The peer took message `id`: it must be one that was sent.
    pub fn on_taken(&self, id: u64) -> Result<MessageId, ProtocolError> {
        if id >= self.next_id {
            return Err(ProtocolError::StreamState);
        }
        Ok(MessageId(id))
    }

    /// A chunk of message `id` arrived; messages are at most `max` bytes.
    pub fn on_chunk(
        &mut self,
        id: u64,
        flags: u8,
        chunk: Bytes,
        max: u32,
        credit: &mut Credit,
        events: &mut VecDeque<Event>,
    ) -> Result<(), ProtocolError> {
        if id != self.next_in {
            return Err(ProtocolError::MessageOrder);
        }
        let n = chunk.len() as u64;
        if !credit.recv_allows(n) {
            return Err(ProtocolError::FlowControl);
        }
        credit.received(n);
        // A message is taken only once complete, so its bytes cannot wait for that
        // to be granted back (a message larger than the window would never
        // finish): buffered message bytes up to the maximum message size are
        // granted at once, beyond it only as the application takes messages.
        let buffered = self.in_bytes + n;
        if buffered <= u64::from(max) {
            credit.release(n);
        } else {
            self.credit_deferred += n;
        }
        self.in_bytes = buffered;
        credit.buffered(n);
        let msg = self.partial.get_or_insert_with(|| InMessage {
            id,
            confirm: flags & MESSAGE_CONFIRM != 0,
            data: BytesMut::new(),
        });
        if msg.data.len() + chunk.len() > max as usize {
            return Err(ProtocolError::MessageTooLarge { max });
        }
        msg.data.extend_from_slice(&chunk);
        if let Some(msg) = self.partial.take_if(|_| flags & MESSAGE_FIN != 0) {
            let len = msg.data.len();
            self.complete.push_back((msg, len));
            self.next_in += 1;
            events.push_back(Event::MessageReceived);
        }
        Ok(())
    }

    /// Takes the next complete message, giving its deferred credit back and
    /// queueing its confirmation if the sender asked.
    pub fn take(
        &mut self,
        credit: &mut Credit,
        control: &mut VecDeque<Frame>,
    ) -> Option<ReceivedMessage> {
        let (msg, len) = self.complete.pop_front()?;
        let len = len as u64;
        credit.taken(len);
        self.in_bytes -= len;
        let release = self.credit_deferred.min(len);
        self.credit_deferred -= release;
        credit.release(release);
        if msg.confirm {
            control.push_back(Frame::MessageTaken { id: msg.id });
        }
        Some(ReceivedMessage {
            id: MessageId(msg.id),
            data: msg.data.freeze(),
        })
    }
}
