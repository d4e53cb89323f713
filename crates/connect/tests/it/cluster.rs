//! A throwaway PostgreSQL cluster a test owns: `initdb` into a temporary folder, started on a
//! free port of 127.0.0.1, and stopped (`-m fast`, `-m immediate`) or restarted by the test. It
//! is stopped and removed when the value drops, and, should the test process die first, by a
//! small reaper process that waits for the test process to end. As root (CI), the server runs as
//! the `postgres` user, since PostgreSQL refuses to run as root.
//!
//! The binaries come from `CONNECT_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// The bootstrap superuser (`initdb -U`).
    pub superuser: String,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CONNECT_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (Debian: /usr/lib/postgresql/<version>/bin)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an installed PostgreSQL server").1
}

fn is_root() -> bool {
    // Our own uid, read from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A command for one of the server's binaries, as `postgres` when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(mut command: Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Cluster {
    /// A new cluster whose bootstrap superuser is `superuser`, trusting local connections.
    pub fn start(superuser: &str) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("cc-pg-")
            .tempdir()
            .expect("a temporary folder");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(dir.path());
                    c
                },
                "chown the cluster folder to postgres",
            );
        }
        let mut initdb = pg_command(&bin, "initdb");
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", superuser, "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"]);
        run(initdb, "initdb");
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
            superuser: superuser.to_owned(),
        };
        cluster.spawn_reaper();
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's own options: this port, a socket in the cluster's folder, and no fsync (an
    /// operating-system crash is not what these tests simulate; commits still reach the WAL
    /// before they return, so `-m immediate` loses nothing committed, as in production).
    fn server_options(&self) -> String {
        format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        )
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let mut start = pg_command(&self.bin, "pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &self.server_options(), "-w", "-t", "60", "start"]);
        run(start, "pg_ctl start");
    }

    /// Stops the server: `mode` is `smart`, `fast` or `immediate` (a crash, as far as clients
    /// and recovery can tell).
    pub fn stop_server(&self, mode: &str) {
        let mut stop = pg_command(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// `postgres://role@127.0.0.1:port/database`.
    pub fn url(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    /// The superuser's URL for `database`.
    pub fn admin_url(&self, database: &str) -> String {
        self.url(&self.superuser, database)
    }

    /// Runs SQL as the superuser in `database` (several statements allowed).
    pub async fn exec(&self, database: &str, sql: &str) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url(database))
            .await
            .expect("the test cluster accepts connections");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
        let _ = conn.close().await;
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server and removes the folder once this process has ended, however it ends.
    fn spawn_reaper(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let as_postgres = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {as_postgres}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data().display(),
            dir = self.dir.path().display(),
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
    }
}
