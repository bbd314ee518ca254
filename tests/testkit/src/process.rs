//! A `converge serve` process, for tests that need the real binary (graceful stop,
//! logs, or a hard kill).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `converge serve` with its stderr collected line by line.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    /// `http://127.0.0.1:PORT`, read from its "listening" log line.
    pub url: String,
}

impl ServerProcess {
    /// Writes `config` to `dir/converge.toml` and starts `binary serve` on a free
    /// loopback port, logging at `log_filter` (a `RUST_LOG` value).
    pub fn start(binary: &Path, config: &str, dir: &Path, log_filter: &str) -> Self {
        let path = dir.join("converge.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&path)
            .env("CONVERGE_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            log: Vec::new(),
            url: String::new(),
        };
        let line = server.wait_for("listening");
        server.url = line
            .split("url=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("the listening line names the URL")
            .trim_end_matches('/')
            .to_owned();
        server
    }

    /// Reads the log until a line contains `needle` (within 30 s) and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; log: {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Stops with SIGTERM and returns the whole log; the process must exit cleanly.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "graceful shutdown should exit 0, got {status}"
        );
        self.drain()
    }

    /// Kills with SIGKILL, as a crash or an OOM kill would, and returns the log so far.
    pub fn kill(mut self) -> String {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.drain()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }

    fn drain(mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
