//! The stand-in for the product on a device: a tiny real HTTP server the
//! updater restarts and health-checks (DESIGN: What "done" means here).
//!
//! `sample-app --port P --version V --health-file FILE [--pid-file F]`
//!
//! - `GET /health` answers 200 with body V while FILE contains `ok`, and 500
//!   when it holds anything else (a release ships `broken` there) or is
//!   missing: so a broken release is a release whose app is unhealthy, and
//!   the updater has to find that out through the network, as on a device.
//! - `GET /version` answers V, so a test can tell which slot is running.
//!
//! It writes its pid to the pid file and exits on SIGTERM (default action).
//! Binding retries for a few seconds: the previous instance may still be
//! releasing the port when the restart command starts this one.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    port: u16,
    version: String,
    health_file: PathBuf,
    pid_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut port = None;
    let mut version = None;
    let mut health_file = None;
    let mut pid_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = Some(value()?.parse::<u16>().map_err(|e| format!("--port: {e}"))?),
            "--version" => version = Some(value()?),
            "--health-file" => health_file = Some(PathBuf::from(value()?)),
            "--pid-file" => pid_file = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        port: port.ok_or("--port is required")?,
        version: version.ok_or("--version is required")?,
        health_file: health_file.ok_or("--health-file is required")?,
        pid_file,
    })
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn respond(mut stream: TcpStream, args: &Args) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers: nothing in them matters here.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/health" => match std::fs::read_to_string(&args.health_file) {
            Ok(s) if s.trim() == "ok" => ("200 OK", args.version.clone()),
            Ok(s) => ("500 Internal Server Error", format!("unhealthy: {}", s.trim())),
            Err(e) => ("500 Internal Server Error", format!("health file: {e}")),
        },
        "/version" => ("200 OK", args.version.clone()),
        _ => ("404 Not Found", "not found".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sample-app: {e}");
            std::process::exit(2);
        }
    };
    let listener = match bind(args.port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sample-app: cannot listen on 127.0.0.1:{}: {e}", args.port);
            std::process::exit(1);
        }
    };
    if let Some(pid_file) = &args.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            eprintln!("sample-app: {}: {e}", pid_file.display());
            std::process::exit(1);
        }
    }
    eprintln!(
        "sample-app {} listening on 127.0.0.1:{} (pid {})",
        args.version,
        args.port,
        std::process::id()
    );
    let args = std::sync::Arc::new(args);
    for stream in listener.incoming().flatten() {
        let args = args.clone();
        std::thread::spawn(move || {
            let _ = respond(stream, &args);
        });
    }
}
