//! The real three-host libvirt + QEMU lab (`tests/lab/lab`), for tests that migrate.
//!
//! Under TCG a running guest takes about a core and the machine has two, so lab tests
//! take [`Lab::acquire`]'s lock and run one at a time.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

/// The lab's hosts as Converge configuration: the three daemons on loopback, migrations over
/// `tcp://127.0.0.1` (libvirt refuses 127.0.0.1 as its own migration address).
pub const HOSTS_CONFIG: &str = r#"
[sampler]
interval_ms = 250
vm_refresh_ms = 1000
max_reconnect_backoff_s = 2

[[hosts]]
name = "a"
uri = "qemu+tcp://127.0.0.1:16601/system"
migration_uri = "tcp://127.0.0.1"
listen_address = "127.0.0.1"

[[hosts]]
name = "b"
uri = "qemu+tcp://127.0.0.1:16602/system"
migration_uri = "tcp://127.0.0.1"
listen_address = "127.0.0.1"

[[hosts]]
name = "c"
uri = "qemu+tcp://127.0.0.1:16603/system"
migration_uri = "tcp://127.0.0.1"
listen_address = "127.0.0.1"
"#;

static LAB: Mutex<bool> = Mutex::const_new(false);

/// The lab's hosts.
pub const HOSTS: [&str; 3] = ["a", "b", "c"];

/// Exclusive use of the lab, up and running.
#[derive(Debug)]
pub struct Lab {
    /// Our turn at the lab; the flag says whether `lab up` ran in this process.
    turn: MutexGuard<'static, bool>,
    script: PathBuf,
}

impl Lab {
    /// Waits for the lab to be free, brings it up if needed (idempotent), and removes
    /// domains an earlier test may have left.
    pub async fn acquire() -> Self {
        let mut lab = Self {
            script: crate::workspace_root().join("tests/lab/lab"),
            turn: LAB.lock().await,
        };
        // Once per test process: `lab up` is idempotent but takes a moment.
        if !*lab.turn {
            lab.run(&["up"]).await;
            *lab.turn = true;
        }
        // A test that failed half-way may leave a host frozen, and its guests running;
        // under TCG each takes a core and would starve every test after it.
        for host in HOSTS {
            lab.run(&["thaw-host", host]).await;
        }
        lab.remove_all_vms().await;
        lab
    }

    /// Destroys and undefines every domain on every host.
    pub async fn remove_all_vms(&self) {
        let mut names = Vec::new();
        for host in HOSTS {
            let uri = host_uri(host);
            let listed = tokio::task::spawn_blocking(move || {
                Command::new("virsh")
                    .args(["-q", "-c", &uri, "list", "--all", "--name"])
                    .output()
            })
            .await
            .expect("virsh thread");
            if let Ok(out) = listed {
                names.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        for name in names {
            self.remove_vm(&name).await;
        }
    }

    /// Runs `tests/lab/lab ARGS`, failing the test with its output if it fails.
    pub async fn run(&self, args: &[&str]) -> String {
        self.run_with(args, &[]).await
    }

    /// [`Self::run`] with extra environment variables.
    pub async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let script = self.script.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(&script)
                .args(&args)
                .envs(env)
                .output()
                .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
            assert!(
                out.status.success(),
                "lab {} failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .expect("lab command thread")
    }

    /// [`Self::start_vm`] on host A with `memory_mib` of guest memory (the lab's default
    /// is 512 MiB).
    pub async fn start_vm_sized(
        &self,
        name: &str,
        mode: &str,
        mb: u32,
        rate: u32,
        memory_mib: u32,
    ) {
        self.remove_vm(name).await;
        let (mb, rate, memory) = (mb.to_string(), rate.to_string(), memory_mib.to_string());
        self.run_with(
            &["start-vm", name, mode, &mb, &rate, "a"],
            &[("LAB_VM_MEMORY_MIB", &memory)],
        )
        .await;
    }

    /// Starts a guest on host A running the dirtier (`idle`, `loop` or `fresh`, over `mb`
    /// MiB at `rate` MiB/s, 0 = unlimited) and waits for its first heartbeat.
    pub async fn start_vm(&self, name: &str, mode: &str, mb: u32, rate: u32) {
        self.start_vm_on(name, mode, mb, rate, "a").await;
    }

    /// [`Self::start_vm`] on host `host` (`a`, `b` or `c`).
    pub async fn start_vm_on(&self, name: &str, mode: &str, mb: u32, rate: u32, host: &str) {
        self.remove_vm(name).await;
        let (mb, rate) = (mb.to_string(), rate.to_string());
        self.run(&["start-vm", name, mode, &mb, &rate, host]).await;
    }

    /// [`Self::start_vm`] for a guest that OpenStack Nova's metadata places in the project
    /// with this UUID.
    pub async fn start_vm_in_nova_project(
        &self,
        name: &str,
        mode: &str,
        mb: u32,
        rate: u32,
        project: &str,
    ) {
        self.remove_vm(name).await;
        self.run_with(
            &["start-vm", name, mode, &mb.to_string(), &rate.to_string()],
            &[("LAB_NOVA_PROJECT", project)],
        )
        .await;
    }

    /// The guest's latest heartbeat counter (it increases while the guest runs).
    pub async fn heartbeat(&self, name: &str) -> u64 {
        let out = self.run(&["heartbeat", name]).await;
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("heartbeat of {name}: {out:?}"))
    }

    /// Waits until the heartbeat passes `after` (the guest is running), within 30 s.
    pub async fn wait_heartbeat_after(&self, name: &str, after: u64) -> u64 {
        for _ in 0..60 {
            let now = self.heartbeat(name).await;
            if now > after {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{name}'s heartbeat stayed at {after}: the guest is not running");
    }

    /// `running`, `paused`, … on host `a`, `b` or `c`, or `None` when it is not there.
    pub async fn state_on(&self, host: &str, name: &str) -> Option<String> {
        let uri = host_uri(host);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("virsh")
                .args(["-q", "-c", &uri, "domstate", &name])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .await
        .ok()
        .flatten()
    }

    /// Destroys and undefines `name` on every host, if it is there.
    pub async fn remove_vm(&self, name: &str) {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            for host in HOSTS {
                let uri = host_uri(host);
                for action in ["destroy", "undefine"] {
                    let _ = Command::new("virsh")
                        .args(["-q", "-c", &uri, action, &name])
                        .output();
                }
            }
        })
        .await
        .expect("virsh thread");
    }

    /// Restarts a host's libvirtd, leaving its guests running.
    pub async fn restart_host(&self, host: &str) {
        self.run(&["restart-host", host]).await;
    }

    /// Freezes a host's libvirtd (SIGSTOP): it accepts connections and answers nothing.
    /// Thaw it with [`Self::thaw_host`]; `Lab::acquire` of the next test thaws every host.
    pub async fn freeze_host(&self, host: &str) {
        self.run(&["freeze-host", host]).await;
    }

    /// Thaws a host frozen by [`Self::freeze_host`].
    pub async fn thaw_host(&self, host: &str) {
        self.run(&["thaw-host", host]).await;
    }
}

fn host_uri(host: &str) -> String {
    match host {
        "a" => "qemu+tcp://127.0.0.1:16601/system".into(),
        "b" => "qemu+tcp://127.0.0.1:16602/system".into(),
        _ => "qemu+tcp://127.0.0.1:16603/system".into(),
    }
}
