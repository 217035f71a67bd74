//! A hostile registry: a small HTTP/1.1 server on a loopback address whose answers the test decides per request
//! (endless chunked bodies, endless tag-list pages, token challenges to other hosts and schemes, huge manifests,
//! answers that never come). It records every request (path and headers) and the body bytes it served, so a
//! test can show what the client did and did not send or read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// How the server answers one request.
pub enum Answer {
    /// A complete answer with `Content-Length`.
    Full { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// A chunked body: `chunk` repeated `count` times (`None`: until the client goes away), after `first`,
    /// with `delay` between chunks.
    Chunked { headers: Vec<(String, String)>, first: Vec<u8>, chunk: Vec<u8>, count: Option<u64>, delay: Duration },
    /// No answer until [`Hostile::release`], then 404.
    Stall,
}

impl Answer {
    /// 200 with a JSON body and extra headers.
    pub fn json(body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) -> Answer {
        let mut h: Vec<(String, String)> = vec![("Content-Type".into(), "application/json".into())];
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Answer::Full { status: 200, headers: h, body: body.into() }
    }

    /// An answer with a status, headers and a body.
    pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Answer::Full { status, headers, body: body.as_bytes().to_vec() }
    }
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// The running server; stops when dropped.
pub struct Hostile {
    /// `IP:PORT`
    pub addr: String,
    seen: Arc<Mutex<Vec<Request>>>,
    served: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    released: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Listens on `ip` (e.g. `127.0.0.1`, `127.0.0.2`) on a free port, answering with `handler`. Call inside a
    /// tokio runtime that keeps running while the test uses the server.
    pub async fn start(ip: &str, handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let released = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (s, b, c, r, w) = (seen.clone(), served.clone(), connections.clone(), released.clone(), wake.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, s, b, r, w) = (handler.clone(), s.clone(), b.clone(), r.clone(), w.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &*h, &s, &b, &r, &w).await;
                });
            }
        });
        Hostile { addr, seen, served, connections, released, wake, task }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    /// Body bytes written so far (all requests).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Lets every stalled request (and later ones) answer 404.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }
}

/// Reads a request line and headers (header names in lowercase); the body, if any, is left unread.
pub async fn read_request(rd: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<Request> {
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Ok(Request { method, path, headers })
}

async fn serve(
    conn: tokio::net::TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<Request>>,
    served: &AtomicU64,
    released: &AtomicBool,
    wake: &tokio::sync::Notify,
) -> std::io::Result<()> {
    let (rd, mut wr) = conn.into_split();
    let request = read_request(rd).await?;
    seen.lock().unwrap().push(request.clone());
    let head = |status: u16, headers: &[(String, String)], extra: &str| {
        let mut h = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n{extra}");
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    match handler(&request) {
        Answer::Full { status, headers, body } => {
            wr.write_all(head(status, &headers, &format!("Content-Length: {}\r\n", body.len())).as_bytes()).await?;
            wr.write_all(&body).await?;
            served.fetch_add(body.len() as u64, Ordering::SeqCst);
        }
        Answer::Chunked { headers, first, chunk, count, delay } => {
            wr.write_all(head(200, &headers, "Transfer-Encoding: chunked\r\n").as_bytes()).await?;
            let mut sent = 0u64;
            let mut body = first;
            loop {
                if !body.is_empty() {
                    wr.write_all(format!("{:x}\r\n", body.len()).as_bytes()).await?;
                    wr.write_all(&body).await?;
                    wr.write_all(b"\r\n").await?;
                    served.fetch_add(body.len() as u64, Ordering::SeqCst);
                }
                if count.is_some_and(|c| sent >= c) {
                    break;
                }
                sent += 1;
                body = chunk.clone();
                if !delay.is_zero() {
                    wr.flush().await?;
                    tokio::time::sleep(delay).await;
                }
            }
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Answer::Stall => {
            while !released.load(Ordering::SeqCst) {
                let notified = wake.notified();
                if released.load(Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
            wr.write_all(head(404, &[], "Content-Length: 0\r\n").as_bytes()).await?;
        }
    }
    wr.flush().await
}
