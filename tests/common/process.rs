//! The real `aelabel serve` binary as a child process: started on port 0, its JSON log read
//! line by line for the bound addresses, and killed when the guard is dropped (also when a
//! test panics), so no test leaves a server behind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a server may take from spawn to "serving".
const START_LIMIT: Duration = Duration::from_secs(60);

/// `aelabel serve` for `model` on 127.0.0.1 port 0 (gRPC and metrics), one engine thread,
/// JSON logs, and no `AELABEL_*` or `RUST_LOG` from the caller; append flags as needed.
pub fn serve_command(model: &Path) -> Command {
    let mut command = super::clean_command();
    command
        .args(["serve", "--log-format", "json", "--threads", "1"])
        .args(["--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--model")
        .arg(model);
    command
}

/// `aelabel serve` like [`serve_command`], but following the registry at `database_url` (so
/// it also answers `LabelJobs` and runs the job worker) instead of serving one file.
pub fn registry_serve_command(database_url: &str) -> Command {
    let mut command = super::clean_command();
    command
        .args(["serve", "--log-format", "json", "--threads", "1"])
        .args(["--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--database-url", database_url]);
    command
}

/// A running `aelabel serve`; dropping it kills the process.
pub struct ServerProcess {
    pid: u32,
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound metrics address, when the server logged one.
    pub http_addr: Option<SocketAddr>,
    lines: Receiver<String>,
    /// Every log line read so far.
    pub log: Vec<String>,
    exit: Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
}

impl ServerProcess {
    /// Spawns `command` (an `aelabel serve` with `--log-format json`) and waits until it logs
    /// "serving"; panics with its log if it exits or stays silent instead.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the aelabel binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exit) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut server = Self {
            pid,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            http_addr: None,
            lines,
            log: Vec::new(),
            exit,
            exited: None,
        };
        let deadline = Instant::now() + START_LIMIT;
        // "listening" names the port; "serving" says the warm-up is done.
        let mut serving = false;
        while !serving || server.addr.port() == 0 {
            let line = server.next_json(deadline, "logs \"serving\"");
            let address = || -> SocketAddr {
                line["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no address in {line}"))
            };
            match line["fields"]["message"].as_str() {
                Some("listening") => server.addr = address(),
                Some("http listening") => server.http_addr = Some(address()),
                Some("serving") => serving = true,
                _ => {}
            }
        }
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://ADDR` of the gRPC port.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGKILL (no shutdown, no flushing) and waits until the process is gone.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal("-KILL");
        self.wait_exit(Duration::from_secs(10))
    }

    fn signal(&self, which: &str) {
        let sent = Command::new("kill")
            .args([which, &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {which} {} failed", self.pid);
    }

    /// The next log line as JSON; panics at `deadline` or if the process ends first.
    fn next_json(&mut self, deadline: Instant, waiting_for: &str) -> serde_json::Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                let json = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
                self.log.push(line);
                json
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "the server never {waiting_for}; its log:\n{}",
                    self.log.join("\n")
                )
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the server ended its log before it {waiting_for}; exit {:?}; its log:\n{}",
                self.exit.recv_timeout(Duration::from_secs(5)).ok(),
                self.log.join("\n")
            ),
        }
    }

    /// Waits up to `limit` for a log line whose message is `message`, and returns it.
    pub fn wait_for_log(&mut self, message: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let line = self.next_json(deadline, &format!("logs {message:?}"));
            if line["fields"]["message"] == message {
                return line;
            }
        }
    }

    /// Waits up to `limit` for the process to exit, and returns how it did.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = self.exit.recv_timeout(limit).unwrap_or_else(|_| {
            panic!(
                "the server did not exit within {limit:?}; its log:\n{}",
                self.log.join("\n")
            )
        });
        self.exited = Some(status);
        // The rest of its log, now that nothing more can be written.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        status
    }

    /// The TCP ports this process listens on, from /proc (its socket inodes matched against
    /// the kernel's table of listening sockets), sorted.
    pub fn listening_ports(&self) -> Vec<u16> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).expect("/proc/PID/fd");
        let inodes: Vec<String> = fds
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                Some(
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .collect();
        let mut ports = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            for row in text.lines().skip(1) {
                let columns: Vec<&str> = row.split_whitespace().collect();
                // local_address is column 1 (ADDR:PORT in hex), st column 3 (0A = LISTEN),
                // inode column 9.
                if columns.len() > 9 && columns[3] == "0A" && inodes.iter().any(|i| i == columns[9])
                {
                    let port = columns[1].rsplit(':').next().unwrap_or("");
                    ports.push(u16::from_str_radix(port, 16).expect("a hex port"));
                }
            }
        }
        ports.sort_unstable();
        ports
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.exited.is_some() || self.exit.try_recv().is_ok() {
            return;
        }
        // Still running (a test failed or did not stop it): kill it and reap it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.exit.recv_timeout(Duration::from_secs(10));
    }
}
