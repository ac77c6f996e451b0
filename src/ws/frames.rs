//! Frame-level rules fastwebsockets leaves to us: reassembling fragmented messages (with a
//! size cap on the whole message and UTF-8 checked as the fragments arrive), and validating
//! close frames. Each violation maps to the close code RFC 6455 asks for.

use fastwebsockets::{Frame, OpCode};

/// Close codes the server sends.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    /// The server cannot serve the socket now (the host app did not confirm a session).
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
}

/// A frame that breaks the protocol: close with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

pub(super) fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// A complete data message.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
}

/// Reassembles fragmented messages.
#[derive(Debug)]
pub struct Assembler {
    max_bytes: usize,
    opcode: Option<OpCode>,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already known to be valid UTF-8.
    checked: usize,
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            opcode: None,
            buffer: Vec::new(),
            checked: 0,
        }
    }

    /// Feeds a data frame (text, binary or continuation); returns a message once complete.
    pub fn push(&mut self, frame: &Frame<'_>) -> Result<Option<Message>, Violation> {
        match (frame.opcode, self.opcode) {
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(violation(
                    close::PROTOCOL_ERROR,
                    "new message before the previous one finished",
                ));
            }
            (OpCode::Continuation, None) => {
                return Err(violation(
                    close::PROTOCOL_ERROR,
                    "continuation without a message to continue",
                ));
            }
            (OpCode::Text | OpCode::Binary, None) => self.opcode = Some(frame.opcode),
            _ => {}
        }
        if self.buffer.len() + frame.payload.len() > self.max_bytes {
            return Err(violation(close::TOO_BIG, "message too large"));
        }
        self.buffer.extend_from_slice(&frame.payload);
        if self.opcode == Some(OpCode::Text) && !frame.fin {
            // Fail fast on a fragment: check what arrived, leaving a possibly split last
            // character for later. A final frame is checked once, whole, below.
            match std::str::from_utf8(&self.buffer[self.checked..]) {
                Ok(_) => self.checked = self.buffer.len(),
                Err(e) if e.error_len().is_some() => {
                    return Err(violation(close::INVALID_PAYLOAD, "text is not valid UTF-8"));
                }
                Err(e) => self.checked += e.valid_up_to(),
            }
        }
        if !frame.fin {
            return Ok(None);
        }
        let opcode = self.opcode.take();
        let bytes = std::mem::take(&mut self.buffer);
        self.checked = 0;
        match opcode {
            Some(OpCode::Text) => String::from_utf8(bytes)
                .map(|text| Some(Message::Text(text)))
                .map_err(|_| violation(close::INVALID_PAYLOAD, "text is not valid UTF-8")),
            _ => Ok(Some(Message::Binary(bytes))),
        }
    }
}

/// Validates a close frame from the client; returns the code to answer with.
pub fn check_close(payload: &[u8]) -> Result<u16, Violation> {
    match payload.len() {
        0 => Ok(close::NORMAL),
        1 => Err(violation(close::PROTOCOL_ERROR, "close frame of one byte")),
        126.. => Err(violation(
            close::PROTOCOL_ERROR,
            "control frame over 125 bytes",
        )),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(violation(close::PROTOCOL_ERROR, "invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(violation(
                    close::INVALID_PAYLOAD,
                    "close reason is not UTF-8",
                ));
            }
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use fastwebsockets::Payload;

    use super::*;

    fn frame(fin: bool, opcode: OpCode, data: &[u8]) -> Frame<'static> {
        Frame::new(fin, opcode, None, Payload::Owned(data.to_vec()))
    }

    #[test]
    fn fragments_reassemble_and_utf8_fails_fast() {
        let mut a = Assembler::new(100);
        let euro = "€".as_bytes(); // three bytes, split across fragments
        assert_eq!(a.push(&frame(false, OpCode::Text, &euro[..1])), Ok(None));
        assert_eq!(
            a.push(&frame(false, OpCode::Continuation, &euro[1..])),
            Ok(None)
        );
        assert_eq!(
            a.push(&frame(true, OpCode::Continuation, b"!")),
            Ok(Some(Message::Text("€!".into())))
        );
        let mut a = Assembler::new(100);
        let bad = a.push(&frame(false, OpCode::Text, &[0xce, 0xba, 0xff]));
        assert_eq!(bad.map_err(|v| v.code), Err(close::INVALID_PAYLOAD));
        // Final frames, checked whole: a bad byte, a character cut off at the end, and a
        // fragment that ended half-way through one.
        for bytes in [&[b'o', b'k', 0xff][..], &euro[..2]] {
            let bad = Assembler::new(100).push(&frame(true, OpCode::Text, bytes));
            assert_eq!(bad.map_err(|v| v.code), Err(close::INVALID_PAYLOAD));
        }
        let mut a = Assembler::new(100);
        assert_eq!(a.push(&frame(false, OpCode::Text, &euro[..2])), Ok(None));
        let cut = a.push(&frame(true, OpCode::Continuation, b"!"));
        assert_eq!(cut.map_err(|v| v.code), Err(close::INVALID_PAYLOAD));
        let whole = Assembler::new(100).push(&frame(true, OpCode::Text, "κόσμε".as_bytes()));
        assert_eq!(whole, Ok(Some(Message::Text("κόσμε".into()))));
    }

    #[test]
    fn size_cap_covers_the_whole_message() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(&frame(false, OpCode::Binary, &[0; 6])), Ok(None));
        let over = a.push(&frame(true, OpCode::Continuation, &[0; 6]));
        assert_eq!(over.map_err(|v| v.code), Err(close::TOO_BIG));
    }

    #[test]
    fn interleaving_rules() {
        let mut a = Assembler::new(100);
        let stray = a.push(&frame(true, OpCode::Continuation, b"x"));
        assert_eq!(stray.map_err(|v| v.code), Err(close::PROTOCOL_ERROR));
        let mut a = Assembler::new(100);
        assert_eq!(a.push(&frame(false, OpCode::Text, b"a")), Ok(None));
        let new = a.push(&frame(true, OpCode::Text, b"b"));
        assert_eq!(new.map_err(|v| v.code), Err(close::PROTOCOL_ERROR));
    }

    #[test]
    fn close_frames_are_validated() {
        assert_eq!(check_close(&[]), Ok(1000));
        assert_eq!(check_close(&[3, 232]), Ok(1000));
        assert_eq!(check_close(&[0x03]).map_err(|v| v.code), Err(1002));
        assert_eq!(check_close(&[0x03, 0xed]).map_err(|v| v.code), Err(1002)); // 1005
        assert_eq!(check_close(&[0x13, 0x88]).map_err(|v| v.code), Err(1002)); // 5000
        assert_eq!(
            check_close(&[0x03, 0xe8, 0xff]).map_err(|v| v.code),
            Err(1007)
        );
        assert_eq!(check_close(&[0x0f, 0xa0]), Ok(4000));
        let long = [&[0x03, 0xe8][..], &[b'a'; 124][..]].concat();
        assert_eq!(check_close(&long).map_err(|v| v.code), Err(1002));
    }
}
