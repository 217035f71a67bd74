//! The Docker engine's socket and its version (`GET /version` with a short deadline).

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::DockerInfo;
use crate::os::fsutil::under_root;

/// How long the Docker socket gets to answer `GET /version`; the probe must stay fast with a hung daemon.
const DOCKER_TIMEOUT: Duration = Duration::from_millis(1000);

/// The Docker socket: `DOCKER_HOST=unix://...` when probing the real root, else `/run/docker.sock` or
/// `/var/run/docker.sock` under the root. Its version is asked only when it is a socket.
pub(super) fn find_docker(root: &Path, real_root: bool, docker_host: Option<&str>) -> Option<DockerInfo> {
    let from_env = docker_host.filter(|_| real_root).and_then(|h| h.strip_prefix("unix://")).map(PathBuf::from);
    let (socket, file) = match from_env {
        Some(p) => (p.clone(), p),
        None => ["/run/docker.sock", "/var/run/docker.sock"]
            .iter()
            .map(|p| (PathBuf::from(p), under_root(root, p)))
            .find(|(_, f)| f.symlink_metadata().is_ok())?,
    };
    let meta = std::fs::metadata(&file).ok();
    if meta.is_none() && file.symlink_metadata().is_err() {
        return None;
    }
    let answer = match meta {
        Some(m) if m.file_type().is_socket() => docker_version(&file),
        _ => None,
    };
    let (version, api_version) = answer.unwrap_or_default();
    Some(DockerInfo { socket, version, api_version })
}

/// Asks the engine `GET /version` over its socket with a short deadline; `None` when it does not answer well.
fn docker_version(socket: &Path) -> Option<(Option<String>, Option<String>)> {
    let deadline = Instant::now() + DOCKER_TIMEOUT;
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_write_timeout(Some(DOCKER_TIMEOUT)).ok()?;
    stream.write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 256 * 1024 {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    parse_docker_version_response(&buf)
}

/// Reads `Version` and `ApiVersion` from an HTTP response to `GET /version` (HTTP/1.0, so no chunking expected;
/// a chunked body is decoded anyway). `None` unless the status is 200 and the body is a JSON object.
fn parse_docker_version_response(resp: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&resp[..split]).ok()?;
    let mut body = resp[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next()?;
    let code = status.split_whitespace().nth(1)?;
    if !status.starts_with("HTTP/1.") || code != "200" {
        return None;
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        body = dechunk(&body)?;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_owned);
    v.is_object().then(|| (field("Version"), field("ApiVersion")))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_version_response_parsing() {
        let ok = b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\r\n{\"Platform\":{\"Name\":\"\"},\"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\",\"Os\":\"linux\",\"Arch\":\"arm64\"}\n";
        assert_eq!(parse_docker_version_response(ok), Some((Some("20.10.24+dfsg1".into()), Some("1.41".into()))));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n13\r\n{\"Version\":\"27.5.1\"\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_docker_version_response(chunked), Some((Some("27.5.1".into()), None)));
        assert_eq!(parse_docker_version_response(b"HTTP/1.0 404 Not Found\r\n\r\n{}"), None);
        assert_eq!(parse_docker_version_response(b"HTTP/1.0 200 OK\r\n\r\nnot json"), None);
        assert_eq!(parse_docker_version_response(b"garbage"), None);
        assert_eq!(parse_docker_version_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), None);
    }
}
