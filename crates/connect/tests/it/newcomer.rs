//! What a newcomer meets first, run as they run it — the `celeste-connect` binary itself: `serve`
//! names every setting to fix in one run and names an unreachable database's host (never its
//! password); `.env` is read and the environment wins; the demo prints a service key (stable
//! across restarts) and a `curl` line that fetches the connected user's token, accepts extra
//! app origins, sends `/` to the settings page, and answers `/favicon.ico`; the n8n proxy
//! recipe's request, filled in as the demo's banner says, reads the connected user's mail.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use url::Url;

use crate::support::{Backend, TestApp, capture_logs, captured_logs};

const BIN: &str = env!("CARGO_BIN_EXE_celeste-connect");

/// The binary with an empty environment (PATH aside), run in `dir` so no `.env` is found
/// unless the test writes one there.
fn binary(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(dir);
    command
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn encryption_entry() -> String {
    secrecy::ExposeSecret::expose_secret(&celeste_connect::vault::generate_entry("k1").unwrap())
        .to_owned()
}

/// A running child process, killed when dropped, and its stdout read line by line.
struct Running {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    /// Lines up to and including the first that starts with `last`.
    fn lines_until(&mut self, last: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.stdout.read_line(&mut line).unwrap();
            assert!(read > 0, "stdout ended before {last:?}: {lines:#?}");
            let line = line.trim_end().to_owned();
            let done = line.starts_with(last);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_with_nothing_set_names_every_missing_setting_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary(dir.path()).arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    for name in [
        "DATABASE_URL",
        "CONNECT_PUBLIC_URL",
        "CONNECT_APP_ORIGINS",
        "CONNECT_JWT_SECRET or CONNECT_JWKS_URL",
        "CONNECT_ENCRYPTION_KEYS",
        "MICROSOFT_CLIENT_ID",
    ] {
        assert!(
            stderr.contains(&format!("{name} is not set")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn an_unreachable_database_is_named_by_host_once_and_never_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = binary(dir.path())
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("postgres://connect_login:pw-s3cr3t-value@127.0.0.1:{port}/postgres"),
        )
        .env("CONNECT_LISTEN", "127.0.0.1:0")
        .env("CONNECT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("CONNECT_PUBLIC_URL", "http://127.0.0.1:8080")
        .env("CONNECT_APP_ORIGINS", "http://127.0.0.1:3000")
        .env("CONNECT_JWT_SECRET", crate::support::JWT_SECRET)
        .env("CONNECT_ENCRYPTION_KEYS", encryption_entry())
        .env(
            "MICROSOFT_CLIENT_ID",
            "41f6dc82-8127-4330-97e0-c6b26e6aa967",
        )
        .env("MICROSOFT_CLIENT_SECRET", "Xy8Q~abcdefGHIJKL1234567890")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/postgres")),
        "names where the database is: {stderr}"
    );
    assert!(!stderr.contains("pw-s3cr3t-value"), "{stderr}");
    assert!(!stderr.contains("connect_login"), "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "one cause, once: {stderr}"
    );
}

/// `.env.example` with the lines named in `edits` replaced, as a newcomer edits a copy.
fn edited_env_example(edits: &[(&str, String)]) -> String {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example"))
            .unwrap();
    let mut lines: Vec<String> = example.lines().map(str::to_owned).collect();
    for (name, value) in edits {
        let prefix = format!("{name}=");
        let line = lines
            .iter_mut()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!(".env.example has no line {name}="));
        *line = format!("{name}={value}");
    }
    lines.join("\n") + "\n"
}

#[test]
fn a_copy_of_env_example_names_what_is_left_to_fill_in() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), edited_env_example(&[])).unwrap();
    let output = binary(dir.path()).arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(
        !stderr.contains("DATABASE_URL is not set"),
        ".env was read: {stderr}"
    );
    for problem in [
        "CONNECT_JWKS_URL looks like a placeholder",
        "CONNECT_ENCRYPTION_KEYS is not set",
        "MICROSOFT_CLIENT_ID is not set",
    ] {
        assert!(stderr.contains(problem), "{problem}: {stderr}");
    }
}

#[test]
fn serve_starts_from_an_edited_env_file_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let env = edited_env_example(&[
        // Overridden below by the environment: starting proves the environment won.
        (
            "DATABASE_URL",
            "sqlite:///nonexistent-folder/connect.db".into(),
        ),
        ("CONNECT_LISTEN", "127.0.0.1:0".into()),
        ("CONNECT_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ("CONNECT_PUBLIC_URL", "http://127.0.0.1:8080".into()),
        ("CONNECT_APP_ORIGINS", "http://127.0.0.1:3000".into()),
        (
            "CONNECT_APP_SETTINGS_URL",
            "http://127.0.0.1:3000/settings".into(),
        ),
        ("CONNECT_JWT_SECRET", crate::support::JWT_SECRET.into()),
        ("CONNECT_JWKS_URL", String::new()),
        ("CONNECT_ENCRYPTION_KEYS", encryption_entry()),
        (
            "MICROSOFT_CLIENT_ID",
            "41f6dc82-8127-4330-97e0-c6b26e6aa967".into(),
        ),
        (
            "MICROSOFT_CLIENT_SECRET",
            "Xy8Q~abcdefGHIJKL1234567890".into(),
        ),
    ]);
    std::fs::write(dir.path().join(".env"), env).unwrap();
    let mut command = binary(dir.path());
    command.arg("serve").env(
        "DATABASE_URL",
        format!("sqlite://{}", dir.path().join("connect.db").display()),
    );
    let mut serve = Running::start(command);
    let lines = serve.lines_until("admin listening on ");
    assert!(
        lines[0].starts_with("listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(dir.path().join("connect.db").exists());
}

#[test]
fn a_malformed_env_line_is_named_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "CONNECT_LISTEN=127.0.0.1:0\nCONNECT_JWT_SECRET=\"s3cr3t-never-shown\nMICROSOFT_TENANT=common\n",
    )
    .unwrap();
    let output = binary(dir.path()).arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    assert!(stderr.contains("cannot read .env"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-never-shown"), "{stderr}");
}

/// What the demo printed, read back the way a person copies it.
struct DemoBanner {
    base: Url,
    service_key: String,
    token_url: Url,
}

fn read_banner(lines: &[String]) -> DemoBanner {
    let base = Url::parse(lines[0].strip_prefix("listening on ").unwrap()).unwrap();
    let after = |heading: &str| -> &str {
        let at = lines
            .iter()
            .position(|l| l.starts_with(heading))
            .unwrap_or_else(|| panic!("no line {heading:?}: {lines:#?}"));
        lines[at + 1].trim()
    };
    let service_key = after("service key").to_owned();
    let curl = after("once alice is connected");
    let parts: Vec<&str> = curl.split('\'').collect();
    let [command, header, url] = parts.as_slice() else {
        panic!("unexpected curl line {curl:?}");
    };
    assert_eq!(command.trim(), "curl -H");
    assert_eq!(*header, format!("Authorization: Bearer {service_key}"));
    DemoBanner {
        base,
        service_key,
        token_url: Url::parse(url.trim()).unwrap(),
    }
}

fn start_demo(data_dir: &Path, app_origins_env: &str) -> (Running, DemoBanner) {
    let mut command = binary(data_dir.parent().unwrap());
    command
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("CONNECT_APP_ORIGINS", app_origins_env);
    let mut demo = Running::start(command);
    let lines = demo.lines_until("data folder: ");
    let banner = read_banner(&lines);
    (demo, banner)
}

/// Connects the demo user `name` as the settings page does: demo sign-in, auth-url from the
/// page's origin, consent at the emulator, the callback with the binding cookie.
async fn connect_demo_user(http: &reqwest::Client, base: &Url, name: &str) {
    let session: Value = http
        .post(base.join("demo/session").unwrap())
        .json(&serde_json::json!({ "user": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_token = session["access_token"].as_str().unwrap();
    let origin = base.origin().ascii_serialization();
    let started = http
        .get(base.join("v1/integrations/outlook/auth-url").unwrap())
        .bearer_auth(user_token)
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let cookie = started.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = started.json().await.unwrap();
    let auth_url = Url::parse(body["auth_url"].as_str().unwrap()).unwrap();
    let page = http.get(auth_url.clone()).send().await.unwrap();
    assert_eq!(page.status(), 200, "the consent page shows");
    let mut form: Vec<(String, String)> = auth_url.query_pairs().into_owned().collect();
    let account = provider_emulator::demo_accounts()[0].id.clone();
    form.push(("account".into(), account));
    form.push(("decision".into(), "accept".into()));
    let consent = http
        .post(auth_url.as_str().split('?').next().unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = consent.status();
    assert_eq!(
        status,
        302,
        "the emulator redirects back: {}",
        consent.text().await.unwrap()
    );
    let callback = consent.headers()["location"].to_str().unwrap().to_owned();
    let done = http
        .get(callback)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "connected");
}

/// The URL the proxy recipe (examples/n8n/latest-emails-via-proxy.json) requests, with its
/// Settings node's `connect_url` and `user_id` set as the demo's banner says.
fn n8n_proxy_recipe_url(base: &Url, user_id: &str) -> Url {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/n8n/latest-emails-via-proxy.json");
    let workflow: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let request = workflow["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "n8n-nodes-base.httpRequest")
        .unwrap();
    let template = request["parameters"]["url"].as_str().unwrap();
    let url = template
        .trim_start_matches('=')
        .replace(
            "{{ $json.connect_url }}",
            base.as_str().trim_end_matches('/'),
        )
        .replace("{{ $json.user_id }}", user_id);
    let mut url = Url::parse(&url).unwrap();
    for parameter in request["parameters"]["queryParameters"]["parameters"]
        .as_array()
        .unwrap()
    {
        url.query_pairs_mut().append_pair(
            parameter["name"].as_str().unwrap(),
            parameter["value"].as_str().unwrap(),
        );
    }
    url
}

#[tokio::test]
async fn demo_prints_a_service_key_and_curl_line_that_fetch_the_connected_users_token() {
    let folder = tempfile::tempdir().unwrap();
    let data_dir = folder.path().join("demo-data");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (demo, banner) = start_demo(&data_dir, "http://localhost:3000,http://127.0.0.1:5173");

    let before = http
        .get(banner.token_url.clone())
        .bearer_auth(&banner.service_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        before.status(),
        404,
        "the key is accepted; alice is not connected yet"
    );
    connect_demo_user(&http, &banner.base, "alice").await;
    let token = http
        .get(banner.token_url.clone())
        .bearer_auth(&banner.service_key)
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let token: Value = token.json().await.unwrap();
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // The n8n proxy recipe's request, as n8n would send it with the demo's printed settings.
    let user_id = banner
        .token_url
        .path_segments()
        .unwrap()
        .nth(3)
        .unwrap()
        .to_owned();
    let mail = http
        .get(n8n_proxy_recipe_url(&banner.base, &user_id))
        .header("authorization", format!("Bearer {}", banner.service_key))
        .send()
        .await
        .unwrap();
    let status = mail.status();
    assert_eq!(status, 200, "{}", mail.text().await.unwrap());
    let mail: Value = mail.json().await.unwrap();
    let messages = mail["value"].as_array().unwrap();
    assert!(!messages.is_empty() && messages.len() <= 10, "{mail}");
    assert!(messages.iter().all(|m| m["subject"].is_string()), "{mail}");

    // Extra app origins from CONNECT_APP_ORIGINS may call the user API from the browser.
    for origin in ["http://localhost:3000", "http://127.0.0.1:5173"] {
        let preflight = http
            .request(
                reqwest::Method::OPTIONS,
                banner.base.join("v1/integrations").unwrap(),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert_eq!(
            preflight.headers()["access-control-allow-origin"],
            origin,
            "{origin}"
        );
    }

    // The same key after a restart, and alice still connected.
    drop(demo);
    let (_demo, again) = start_demo(&data_dir, "");
    assert_eq!(again.service_key, banner.service_key);
    let token = http
        .get(again.token_url.clone())
        .bearer_auth(&again.service_key)
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
}

#[tokio::test]
async fn the_root_leads_to_the_settings_page_and_the_favicon_is_not_an_error() {
    let app = TestApp::start_with(crate::support::TestDb::new(Backend::Sqlite).await, |_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(app.url("/")).send().await.unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    let target = Url::parse(&app.url("/"))
        .unwrap()
        .join(root.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(target.path(), "/settings");
    let page = http.get(target).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let icon = http.get(app.url("/favicon.ico")).send().await.unwrap();
    assert_eq!(icon.status(), 204);
}

#[tokio::test]
async fn an_unknown_path_is_logged_with_its_path_but_not_its_query() {
    capture_logs();
    let app = TestApp::start(Backend::Sqlite).await;
    let response = reqwest::get(app.url("/no-such/page-7f3a?code=query-secret-91c2"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let logs = captured_logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&request_id) && l.contains("request refused"))
        .unwrap_or_else(|| panic!("no log line for {request_id}"));
    assert!(line.contains("path=\"/no-such/page-7f3a\""), "{line}");
    assert!(!logs.contains("query-secret-91c2"), "{line}");
}

#[test]
fn the_openapi_document_lists_every_method_the_proxy_forwards() {
    let doc = serde_json::to_value(celeste_connect::http::openapi()).unwrap();
    let proxy = &doc["paths"]["/v1/service/users/{user_id}/integrations/{provider}/proxy/{path}"];
    for method in ["get", "post", "put", "patch", "delete"] {
        assert!(proxy[method].is_object(), "{method} is documented: {proxy}");
    }
}
