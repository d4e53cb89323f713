//! The `provider-emulator` binary as multi-process tests use it: it prints one
//! `listening on http://ADDR` line once bound (no sleeping for readiness), serves the emulator
//! there, and stops cleanly on SIGTERM. Only process plumbing is tested here; behaviour is
//! tested in-process in `src/tests/`.

// cfg(test) so the workspace's test-only allowances (expect, panic) apply to helpers too.
#[cfg(test)]
mod binary {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    fn start() -> (Child, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_provider-emulator"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--client-id",
                "bin-client",
                "--client-secret",
                "bin-secret",
                "--redirect-uri",
                "http://127.0.0.1:9/cb",
                "--redirect-uri",
                "https://connect.example/cb",
                "--access-token-lifetime-secs",
                "300",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn emulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read line");
        let address = line
            .trim_end()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (child, address)
    }

    /// One HTTP/1.1 exchange over a plain socket; returns (status, body).
    fn request(address: &str, head: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let message = format!(
            "{head}\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(message.as_bytes()).expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn wait_with_timeout(mut child: Child) -> std::process::ExitStatus {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("emulator did not stop within 10 s")
            .expect("wait")
    }

    #[test]
    fn binary_prints_its_address_serves_the_emulator_and_stops_on_sigterm() {
        let (child, address) = start();

        let (status, body) = request(&address, "GET /_emulator/stats HTTP/1.1", "");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"endpoints\""), "{body}");

        let query = "client_id=bin-client&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope=User.Read";
        let (status, page) = request(
            &address,
            &format!("GET /common/oauth2/v2.0/authorize?{query} HTTP/1.1"),
            "",
        );
        assert_eq!(status, 200);
        assert!(page.contains("id=\"accept\""));

        let form = "grant_type=authorization_code&client_id=bin-client&client_secret=bin-secret&code=nope&redirect_uri=x";
        let (status, body) = request(
            &address,
            "POST /common/oauth2/v2.0/token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
            form,
        );
        assert_eq!(status, 400);
        assert!(body.contains("\"invalid_grant\""), "{body}");

        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(terminated.success());
        assert!(
            wait_with_timeout(child).success(),
            "graceful exit on SIGTERM"
        );
    }

    #[test]
    fn binary_refuses_to_start_without_a_client() {
        let status = Command::new(env!("CARGO_BIN_EXE_provider-emulator"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run");
        assert!(!status.success());
    }
}
