//! Reading client frames with no buffer while a socket is idle.
//!
//! fastwebsockets' reader allocates an 8 KiB buffer per socket at the handshake and never
//! gives it back (it only grows, to the largest frame seen). With 20,000 idle sockets that
//! buffer was a third of the daemon's memory. [`FrameReader`] waits for the socket to become
//! readable before it allocates, reads frames out of one buffer while bytes keep coming, and
//! drops the buffer as soon as it holds no partial frame. fastwebsockets still does the
//! handshake and all writing.
//!
//! It enforces the framing rules of RFC 6455 section 5 that fastwebsockets enforced, plus the
//! one it left out (a client must mask its frames); reassembling fragments and checking close
//! frames stay in [`super::frames`].

use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

use super::frames::{Violation, close};

/// Bytes asked of the kernel per read once a socket has data.
const READ_CHUNK: usize = 4096;
/// Room below which the buffer grows by [`READ_CHUNK`] before a read.
const MIN_SPARE: usize = 1024;

/// Why no frame came.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer went away (end of stream or a socket error): nothing to answer.
    Gone,
    /// The peer broke the protocol: close with this code.
    Violation(Violation),
}

fn violation(code: u16, reason: &'static str) -> ReadError {
    ReadError::Violation(super::frames::violation(code, reason))
}

/// The read half of a server-side WebSocket.
#[derive(Debug)]
pub struct FrameReader {
    io: OwnedReadHalf,
    /// Received bytes not yet returned as frames; empty and unallocated between bursts.
    buf: BytesMut,
    /// Largest payload one frame may carry (`limits.max_frame_bytes`); larger closes with 1009.
    max_payload: usize,
}

impl FrameReader {
    /// `early` is what the HTTP server read past the upgrade request (usually nothing).
    pub fn new(io: OwnedReadHalf, early: Bytes, max_payload: usize) -> Self {
        Self {
            io,
            buf: BytesMut::from(&early[..]),
            max_payload,
        }
    }

    /// The next frame, unmasked. Cancel-safe: bytes read so far stay in the reader.
    pub async fn read_frame(&mut self) -> Result<Frame<'static>, ReadError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Takes one whole frame off the front of the buffer, if it is all there.
    fn parse(&mut self) -> Result<Option<Frame<'static>>, ReadError> {
        take_frame(&mut self.buf, self.max_payload)
    }

    /// Waits for bytes and appends them to the buffer.
    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.buf.is_empty() {
            // No partial frame: give the buffer back while the socket waits.
            self.buf = BytesMut::new();
            // `poll_read_ready`, not `readable()`: the socket's read-waker slot still holds the
            // waker of the HTTP connection task that read the upgrade request (hyper reads
            // until the socket would block), and a waker keeps its task's allocation alive.
            // `readable()` waits in a list of its own and left that waker in place, so every
            // idle socket carried its finished connection task: 1,383 bytes each in a heap
            // profile. This wait puts the session's waker in the slot and drops the old one.
            std::future::poll_fn(|cx| self.io.as_ref().poll_read_ready(cx))
                .await
                .map_err(|_| ReadError::Gone)?;
        }
        if self.buf.capacity() - self.buf.len() < MIN_SPARE {
            self.buf.reserve(READ_CHUNK);
        }
        // A short read clears the socket's readiness, so after one `readable` above waits for
        // real; only a wake-up after a read that filled the buffer can leave this waiting with
        // the chunk allocated.
        match self.io.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(ReadError::Gone),
            Ok(_) => Ok(()),
        }
    }
}

/// Takes one whole frame off the front of `buf`, unmasked, if it is all there; a frame of more
/// than `max_payload` bytes is refused. The reader's parsing, apart from its socket, so that
/// the fuzz targets ([`crate::fuzzing`]) feed it bytes as a socket would.
pub(crate) fn take_frame(
    buf: &mut BytesMut,
    max_payload: usize,
) -> Result<Option<Frame<'static>>, ReadError> {
    let Some(header) = parse_header(buf, max_payload)? else {
        return Ok(None);
    };
    // The buffer grows with what arrives, not with what a header announces: 14 bytes must not
    // make the daemon set aside `max_frame_bytes`.
    if buf.len() < header.len.saturating_add(header.payload) {
        return Ok(None);
    }
    buf.advance(header.len);
    let mut payload = buf.split_to(header.payload);
    fastwebsockets::unmask(&mut payload, header.mask);
    Ok(Some(Frame::new(
        header.fin,
        header.opcode,
        None,
        Payload::Bytes(payload),
    )))
}

/// A frame header, checked.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    /// Bytes of the header itself.
    len: usize,
    /// Bytes of payload after it.
    payload: usize,
}

/// Reads the header at the front of `bytes`: `None` until all of it has arrived.
fn parse_header(bytes: &[u8], max_payload: usize) -> Result<Option<Header>, ReadError> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(violation(close::PROTOCOL_ERROR, "reserved bits set"));
    }
    let fin = first & 0x80 != 0;
    let opcode = OpCode::try_from(first & 0x0F)
        .map_err(|_| violation(close::PROTOCOL_ERROR, "unknown opcode"))?;
    if second & 0x80 == 0 {
        return Err(violation(
            close::PROTOCOL_ERROR,
            "client frames must be masked",
        ));
    }
    let (payload, extended) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest {
            // RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0.
            [a, ..] if a & 0x80 != 0 => {
                return Err(violation(
                    close::PROTOCOL_ERROR,
                    "64-bit length with the top bit set",
                ));
            }
            [a, b, c, d, e, f, g, h, ..] => {
                (u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]), 8)
            }
            _ => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && !fin {
        return Err(violation(close::PROTOCOL_ERROR, "fragmented control frame"));
    }
    if control && payload > 125 {
        return Err(violation(
            close::PROTOCOL_ERROR,
            "control frame over 125 bytes",
        ));
    }
    let payload = match usize::try_from(payload) {
        Ok(n) if n <= max_payload => n,
        _ => return Err(violation(close::TOO_BIG, "frame too large")),
    };
    let Some([a, b, c, d]) = rest.get(extended..extended + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [*a, *b, *c, *d],
        len: 2 + extended + 4,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame as RFC 6455 writes it: masked, with the shortest length encoding.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    async fn pair(max_payload: usize) -> (FrameReader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (read, _write) = server.into_split();
        (FrameReader::new(read, Bytes::new(), max_payload), client)
    }

    #[test]
    fn the_rfc_example_frames_parse() {
        // RFC 6455 section 5.7: a masked "Hello".
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse_header(&hello, 1024)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            header,
            Header {
                fin: true,
                opcode: OpCode::Text,
                mask: MASK,
                len: 6,
                payload: 5
            }
        );
        for cut in 0..6 {
            assert_eq!(parse_header(&hello[..cut], 1024), Ok(None), "cut at {cut}");
        }
        let long = client_frame(0x82, &[0u8; 300]);
        let header = parse_header(&long, 1024).expect("valid").expect("complete");
        assert_eq!((header.len, header.payload), (8, 300));
        let huge = client_frame(0x82, &vec![0u8; 70_000]);
        let header = parse_header(&huge, 100_000)
            .expect("valid")
            .expect("complete");
        assert_eq!((header.len, header.payload), (14, 70_000));
    }

    #[test]
    fn protocol_violations_get_their_close_codes() {
        let cases: [(&[u8], u16); 9] = [
            (&[0xC1, 0x80, 0, 0, 0, 0], close::PROTOCOL_ERROR), // RSV1
            (&[0x83, 0x80, 0, 0, 0, 0], close::PROTOCOL_ERROR), // opcode 3
            (
                &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
                close::PROTOCOL_ERROR,
            ), // unmasked
            (&[0x09, 0x80, 0, 0, 0, 0], close::PROTOCOL_ERROR), // ping without FIN
            (&[0x89, 0xFE, 0x00, 0x7E], close::PROTOCOL_ERROR), // ping of 126 bytes
            (&[0x82, 0xFE, 0x04, 0x01], close::TOO_BIG),        // 1025 > 1024
            (
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
                close::PROTOCOL_ERROR, // 2^63: the top bit must be 0
            ),
            // Decided on the first length byte, before the rest of the header has arrived.
            (&[0x82, 0xFF, 0xFF], close::PROTOCOL_ERROR),
            (
                &[0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                close::TOO_BIG, // 2^63 - 1, well-formed but over the limit
            ),
        ];
        for (bytes, code) in cases {
            match parse_header(bytes, 1024) {
                Err(ReadError::Violation(v)) => assert_eq!(v.code, code, "{bytes:02x?}"),
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_header(&client_frame(0x82, &[0u8; 1024]), 1024),
            Ok(Some(_))
        ));
        // A first length byte with the top bit clear waits for the rest of the header.
        assert!(matches!(parse_header(&[0x82, 0xFF, 0x7F], 1024), Ok(None)));
    }

    #[tokio::test]
    async fn frames_split_and_packed_across_reads_come_out_whole_and_unmasked() {
        let (mut reader, mut client) = pair(1 << 20).await;
        let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut wire = client_frame(0x81, b"first");
        wire.extend(client_frame(0x89, b"ping"));
        wire.extend(client_frame(0x82, &big));
        wire.extend(client_frame(0x01, b"frag"));
        wire.extend(client_frame(0x80, b"ment"));
        // Dribbled out in uneven pieces, so headers and payloads straddle reads.
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(777) {
                client.write_all(piece).await.expect("write");
                client.flush().await.expect("flush");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            client
        });
        let mut got = Vec::new();
        for _ in 0..5 {
            let frame = reader.read_frame().await.expect("frame");
            got.push((frame.fin, frame.opcode, frame.payload.to_vec()));
        }
        assert_eq!(
            got,
            vec![
                (true, OpCode::Text, b"first".to_vec()),
                (true, OpCode::Ping, b"ping".to_vec()),
                (true, OpCode::Binary, big),
                (false, OpCode::Text, b"frag".to_vec()),
                (true, OpCode::Continuation, b"ment".to_vec()),
            ]
        );
        drop(writer.await.expect("writer"));
        assert_eq!(reader.read_frame().await.err(), Some(ReadError::Gone));
    }

    #[tokio::test]
    async fn an_idle_reader_holds_no_buffer() {
        let (mut reader, mut client) = pair(1024).await;
        client
            .write_all(&client_frame(0x81, b"hi"))
            .await
            .expect("write");
        reader.read_frame().await.expect("frame");
        // Waiting for the next frame, with nothing pending: the buffer is gone.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.read_frame()).await;
        assert!(waiting.is_err(), "no frame was sent");
        assert_eq!(reader.buf.capacity(), 0);
        // A frame cut in two keeps its first half while it waits for the rest.
        let frame = client_frame(0x81, b"half and half");
        client.write_all(&frame[..5]).await.expect("write");
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.read_frame()).await;
        assert!(waiting.is_err(), "the frame is not complete");
        assert_eq!(reader.buf.len(), 5);
        client.write_all(&frame[5..]).await.expect("write");
        let frame = reader.read_frame().await.expect("frame");
        assert_eq!(&frame.payload[..], b"half and half");
    }

    /// Stands for the HTTP connection task: counts the wakers that refer to it.
    struct ConnectionTask;

    impl std::task::Wake for ConnectionTask {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    #[tokio::test]
    async fn waiting_for_a_frame_lets_go_of_the_http_connection_task() {
        use std::sync::Arc;
        use std::task::{Context, Waker};
        use tokio::io::{AsyncRead, ReadBuf};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        // What hyper does before the upgrade: it reads until the socket would block, which
        // leaves its task's waker with the socket.
        let task = Arc::new(ConnectionTask);
        let waker = Waker::from(task.clone());
        let mut room = [0u8; 64];
        let mut buf = ReadBuf::new(&mut room);
        let read =
            std::pin::Pin::new(&mut server).poll_read(&mut Context::from_waker(&waker), &mut buf);
        assert!(read.is_pending(), "nothing was sent");
        drop(waker);
        assert_eq!(
            Arc::strong_count(&task),
            2,
            "the socket holds the task's waker"
        );

        let (read, _write) = server.into_split();
        let mut reader = FrameReader::new(read, Bytes::new(), 1024);
        let waited = tokio::time::timeout(Duration::from_millis(50), reader.read_frame()).await;
        assert!(waited.is_err(), "no frame was sent");
        assert_eq!(
            Arc::strong_count(&task),
            1,
            "an idle socket must not keep the finished connection task alive"
        );
        drop(client);
    }

    #[tokio::test]
    async fn bytes_read_past_the_handshake_come_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (read, _write) = server.into_split();
        let early = client_frame(0x81, b"early");
        let mut reader = FrameReader::new(read, Bytes::from(early[..4].to_vec()), 1024);
        client.write_all(&early[4..]).await.expect("write");
        let frame = reader.read_frame().await.expect("frame");
        assert_eq!(&frame.payload[..], b"early");
    }
}
