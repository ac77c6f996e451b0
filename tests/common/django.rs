//! A stand-in for the host app's `GET /api/v1/auth/me/` (Django REST framework behind a session
//! cookie): a real HTTP server on a loopback port, in the test process, that answers by the
//! `sessionid` cookie and counts the calls it gets.
//!
//! | `sessionid`  | answer |
//! | ---          | --- |
//! | `user-N`     | 200 `{"id": N, "username": "user-N", "email": …}` |
//! | `strid-N`    | 200 `{"user_id": "N"}` (an id as a string, no name) |
//! | `wait-N`     | as `user-N`, after 400 ms (for concurrent checks) |
//! | `slow`       | 200 after 5 s (longer than the tests' `session_check_timeout`) |
//! | `expired`    | 401 (DRF's "credentials were not provided") |
//! | `forbidden`  | 403 |
//! | `broken`     | 500, HTML |
//! | anything else, or no cookie | 401 |

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One call the stand-in got.
#[derive(Debug, Clone)]
pub struct Call {
    pub session: Option<String>,
    pub cookie: Option<String>,
    pub forwarded_for: Option<String>,
}

/// The running stand-in; its thread lives as long as the test process.
pub struct Django {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Django {
    pub fn start() -> Django {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log));
            }
        });
        Django { addr, calls }
    }

    /// `auth.session_check_url` for this stand-in.
    pub fn url(&self) -> String {
        format!("http://{}/api/v1/auth/me/", self.addr)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// Calls made for session `id`.
    pub fn calls_for(&self, id: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.session.as_deref() == Some(id))
            .count()
    }
}

/// A URL where nothing listens: the host app is down.
pub fn down_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/api/v1/auth/me/")
}

fn serve(stream: TcpStream, calls: &Mutex<Vec<Call>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let cookie = headers.get("cookie").cloned();
    let session = cookie.as_deref().and_then(|c| {
        c.split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(n, _)| *n == "sessionid")
            .map(|(_, v)| v.to_owned())
    });
    calls.lock().expect("calls").push(Call {
        session: session.clone(),
        cookie,
        forwarded_for: headers.get("x-forwarded-for").cloned(),
    });
    let user = |id: &str| {
        (
            200,
            format!(r#"{{"id": {id}, "username": "user-{id}", "email": "u{id}@example.com"}}"#),
        )
    };
    let (status, body) = match session.as_deref().unwrap_or("") {
        s if s.starts_with("user-") => user(&s[5..]),
        s if s.starts_with("strid-") => (200, format!(r#"{{"user_id": "{}"}}"#, &s[6..])),
        s if s.starts_with("wait-") => {
            std::thread::sleep(Duration::from_millis(400));
            user(&s[5..])
        }
        "slow" => {
            std::thread::sleep(Duration::from_secs(5));
            user("42")
        }
        "forbidden" => (
            403,
            r#"{"detail": "You do not have permission."}"#.to_owned(),
        ),
        "broken" => (500, "<h1>Server Error (500)</h1>".to_owned()),
        _ => (
            401,
            r#"{"detail": "Authentication credentials were not provided."}"#.to_owned(),
        ),
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "Internal Server Error",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
