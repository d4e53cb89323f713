//! The n8n recipes in `examples/n8n` (security.md §2.3, §8 G1–G3): every workflow file is an n8n
//! export whose wiring holds together; it reaches Celeste Connect only through the Header Auth
//! credential (never a pasted key) and never hands that credential to Microsoft; the proxy
//! recipe reads mail without a token and the token recipe feeds the token to Graph; no workflow
//! lets n8n save execution data (mail, or a live access token) in its database; the README names
//! every file. Each check returns the problems it found, and the last test plants a mistake for
//! each check to prove it can fail. These tests read JSON; they do not run n8n.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const CREDENTIAL_NAME: &str = "Celeste Connect service key";
const PROXY_FILE: &str = "latest-emails-via-proxy.json";
const TOKEN_FILE: &str = "token-then-graph.json";
const ALL_USERS_FILE: &str = "all-connected-users.json";
const GMAIL_FILE: &str = "gmail-latest-messages-via-proxy.json";
const DROPBOX_FILE: &str = "dropbox-list-folder-via-proxy.json";
const HTTP_REQUEST: &str = "n8n-nodes-base.httpRequest";
const STICKY_NOTE: &str = "n8n-nodes-base.stickyNote";
const WEBHOOK: &str = "n8n-nodes-base.webhook";
const EVENTS_FILE: &str = "connection-events-webhook.json";

/// Text that must never appear in a workflow file: a service key, a JWT (the seed handed n8n the
/// Supabase service-role JWT), a Supabase secret key.
const SECRET_MARKERS: &[&str] = &["ccsk_", "Bearer ccsk", "eyJ", "sb_secret_", "service_role"];

struct Workflow {
    file: String,
    text: String,
    json: Value,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/n8n")
}

fn workflows() -> Vec<Workflow> {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let json =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
            Workflow { file, text, json }
        })
        .collect()
}

fn workflow(file: &str) -> Workflow {
    workflows()
        .into_iter()
        .find(|wf| wf.file == file)
        .unwrap_or_else(|| panic!("examples/n8n/{file} is missing"))
}

fn nodes(wf: &Value) -> &[Value] {
    wf["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn name(node: &Value) -> &str {
    node["name"].as_str().unwrap_or_default()
}

fn node_type(node: &Value) -> &str {
    node["type"].as_str().unwrap_or_default()
}

fn url(node: &Value) -> &str {
    node["parameters"]["url"].as_str().unwrap_or_default()
}

fn http_nodes(wf: &Value) -> impl Iterator<Item = &Value> {
    nodes(wf).iter().filter(|n| node_type(n) == HTTP_REQUEST)
}

fn calls_connect(node: &Value) -> bool {
    url(node).contains("/v1/service/")
}

/// Graph at its public address, or at the workflow's `graph_url` setting.
fn calls_graph(node: &Value) -> bool {
    url(node).contains("graph.microsoft.com") || url(node).contains(".json.graph_url }}")
}

/// `name: value` pairs of a fixed collection such as `queryParameters` or `headerParameters`.
fn pairs<'a>(node: &'a Value, collection: &str) -> Vec<(&'a str, &'a str)> {
    node["parameters"][collection]["parameters"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default(),
                p["value"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// The nodes `from` leads to, directly or not, over any output.
fn downstream<'a>(wf: &'a Value, from: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([from.to_owned()]);
    while let Some(current) = queue.pop_front() {
        let outputs = wf["connections"][current.as_str()]["main"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for target in outputs.iter().filter_map(Value::as_array).flatten() {
            if let Some(next) = target["node"].as_str()
                && seen.insert(next)
            {
                queue.push_back(next.to_owned());
            }
        }
    }
    seen
}

/// An n8n export: nodes with the fields n8n reads, unique names and ids, connections between
/// existing nodes, and every working node reachable from a trigger.
fn structure_problems(wf: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if nodes(wf).is_empty() {
        problems.push("`nodes` is missing or empty".to_owned());
    }
    let Some(connections) = wf["connections"].as_object() else {
        problems.push("`connections` is missing".to_owned());
        return problems;
    };
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for node in nodes(wf) {
        let label = name(node);
        if label.is_empty() || !names.insert(label) {
            problems.push(format!("node name {label:?} is empty or not unique"));
        }
        if !node["id"].as_str().is_some_and(|id| ids.insert(id)) {
            problems.push(format!("node {label:?}: id missing or not unique"));
        }
        if !node_type(node).starts_with("n8n-nodes-base.") {
            problems.push(format!("node {label:?}: not a built-in node type"));
        }
        if !node["typeVersion"].is_number() {
            problems.push(format!("node {label:?}: no typeVersion"));
        }
        let position = node["position"].as_array();
        if !position.is_some_and(|p| p.len() == 2 && p.iter().all(Value::is_number)) {
            problems.push(format!("node {label:?}: position is not [x, y]"));
        }
        if !node["parameters"].is_object() {
            problems.push(format!("node {label:?}: no parameters object"));
        }
    }
    for (source, outputs) in connections {
        if !names.contains(source.as_str()) {
            problems.push(format!("connection from unknown node {source:?}"));
        }
        let targets = outputs["main"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for target in targets.iter().filter_map(Value::as_array).flatten() {
            let to = target["node"].as_str().unwrap_or_default();
            if !names.contains(to) {
                problems.push(format!("connection {source:?} -> unknown node {to:?}"));
            }
        }
    }
    let mut reached = BTreeSet::new();
    for trigger in nodes(wf)
        .iter()
        .filter(|n| node_type(n).ends_with("Trigger") || node_type(n) == WEBHOOK)
    {
        reached.insert(name(trigger));
        reached.extend(downstream(wf, name(trigger)));
    }
    for node in nodes(wf) {
        if node_type(node) != STICKY_NOTE && !reached.contains(name(node)) {
            problems.push(format!(
                "node {:?} is not reachable from a trigger",
                name(node)
            ));
        }
    }
    problems
}

/// Which secret markers the file contains (never the text around them: it could be a key).
fn secret_problems(text: &str) -> Vec<String> {
    SECRET_MARKERS
        .iter()
        .filter(|marker| text.contains(*marker))
        .map(|marker| format!("contains {marker:?}"))
        .collect()
}

/// Calls to Celeste Connect carry the service key from the Header Auth credential, by name,
/// and nothing else sets their Authorization header.
fn connect_call_problems(wf: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for node in http_nodes(wf).filter(|n| calls_connect(n)) {
        let label = name(node);
        let params = &node["parameters"];
        if params["authentication"] != "genericCredentialType"
            || params["genericAuthType"] != "httpHeaderAuth"
        {
            problems.push(format!("{label:?} does not use generic Header Auth"));
        }
        if node["credentials"]["httpHeaderAuth"]["name"] != CREDENTIAL_NAME {
            problems.push(format!(
                "{label:?} does not name the {CREDENTIAL_NAME:?} credential"
            ));
        }
        if pairs(node, "headerParameters")
            .iter()
            .any(|(header, _)| header.eq_ignore_ascii_case("authorization"))
        {
            problems.push(format!("{label:?} sets Authorization by hand"));
        }
    }
    problems
}

/// Calls to Microsoft carry no n8n credential (so never the service key), and every HTTP
/// Request node calls either the service or Graph, with the node version the recipes target.
fn other_call_problems(wf: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for node in http_nodes(wf) {
        let label = name(node);
        if node["typeVersion"] != json!(4.2) {
            problems.push(format!("{label:?} is not HTTP Request 4.2"));
        }
        if calls_graph(node) {
            let auth = node["parameters"]["authentication"]
                .as_str()
                .unwrap_or("none");
            if auth != "none" || node.get("credentials").is_some() {
                problems.push(format!("{label:?} sends an n8n credential to Microsoft"));
            }
        } else if !calls_connect(node) {
            problems.push(format!("{label:?} calls neither the service nor Graph"));
        }
    }
    problems
}

/// n8n saves no execution data for the workflow: not on success, not on error, not for manual
/// runs, not node by node.
fn settings_problems(wf: &Value) -> Vec<String> {
    let settings = &wf["settings"];
    [
        ("saveDataSuccessExecution", json!("none")),
        ("saveDataErrorExecution", json!("none")),
        ("saveManualExecutions", json!(false)),
        ("saveExecutionProgress", json!(false)),
    ]
    .into_iter()
    .filter(|(key, wanted)| settings[*key] != *wanted)
    .map(|(key, wanted)| format!("settings.{key} is {}, not {wanted}", settings[key]))
    .collect()
}

/// The value the `Settings` node gives `field`.
fn setting<'a>(wf: &'a Value, field: &str) -> Option<&'a str> {
    nodes(wf).iter().find(|n| name(n) == "Settings")?["parameters"]["assignments"]["assignments"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == field)?["value"]
        .as_str()
}

fn assert_none(file: &str, check: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{file}: {check}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_example_is_an_importable_n8n_workflow() {
    let all = workflows();
    let files: Vec<&str> = all.iter().map(|wf| wf.file.as_str()).collect();
    assert!(
        files.contains(&PROXY_FILE) && files.contains(&TOKEN_FILE),
        "{files:?}"
    );
    for wf in &all {
        assert!(
            wf.json["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{}: no name",
            wf.file
        );
        assert_none(&wf.file, "structure", structure_problems(&wf.json));
    }
}

#[test]
fn workflows_never_embed_a_service_key() {
    for wf in workflows() {
        assert_none(&wf.file, "secrets in the file", secret_problems(&wf.text));
    }
}

#[test]
fn connect_is_called_only_with_the_header_auth_credential() {
    for wf in workflows() {
        // The events recipe is called by the service; it calls nothing.
        assert!(
            wf.file == EVENTS_FILE || http_nodes(&wf.json).any(calls_connect),
            "{}: never calls the service",
            wf.file
        );
        assert_none(
            &wf.file,
            "calls to the service",
            connect_call_problems(&wf.json),
        );
    }
}

#[test]
fn the_service_key_is_never_sent_to_microsoft() {
    for wf in workflows() {
        assert_none(&wf.file, "other calls", other_call_problems(&wf.json));
    }
}

#[test]
fn the_proxy_recipe_reads_mail_through_the_proxy_without_a_token() {
    let wf = workflow(PROXY_FILE);
    let proxy = http_nodes(&wf.json)
        .find(|n| {
            url(n).contains("/v1/service/users/")
                && url(n).contains("/integrations/outlook/proxy/v1.0/me/messages")
        })
        .unwrap_or_else(|| panic!("{PROXY_FILE}: no call to the proxy's me/messages"));
    assert!(
        pairs(proxy, "queryParameters").contains(&("$top", "10")),
        "asks for the 10 latest emails"
    );
    assert!(
        !http_nodes(&wf.json).any(|n| calls_graph(n) || url(n).contains("/token")),
        "the proxy recipe must not fetch a token or call Graph itself"
    );
    assert!(!wf.text.contains("access_token"), "no node handles a token");

    let after = downstream(&wf.json, name(proxy));
    let split = nodes(&wf.json)
        .iter()
        .find(|n| {
            node_type(n) == "n8n-nodes-base.splitOut"
                && n["parameters"]["fieldToSplitOut"] == "value"
        })
        .expect("a Split Out node on Graph's `value`");
    assert!(
        after.contains(name(split)),
        "the split follows the proxy call"
    );
    let kept: Vec<&str> = downstream(&wf.json, name(split))
        .into_iter()
        .filter_map(|n| nodes(&wf.json).iter().find(|node| name(node) == n))
        .flat_map(|node| {
            node["parameters"]["assignments"]["assignments"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
        })
        .filter_map(|a| a["name"].as_str())
        .collect();
    for field in ["subject", "from", "received"] {
        assert!(kept.contains(&field), "keeps {field}: {kept:?}");
    }
}

#[test]
fn the_token_recipe_gets_a_token_then_calls_graph_with_it() {
    let wf = workflow(TOKEN_FILE);
    let token = http_nodes(&wf.json)
        .find(|n| {
            url(n).contains("/v1/service/users/") && url(n).contains("/integrations/outlook/token")
        })
        .unwrap_or_else(|| panic!("{TOKEN_FILE}: no call to /token"));
    let graph = http_nodes(&wf.json)
        .find(|n| calls_graph(n) && url(n).ends_with("/v1.0/me/messages"))
        .unwrap_or_else(|| panic!("{TOKEN_FILE}: no call to Graph's me/messages"));
    assert_eq!(
        setting(&wf.json, "graph_url"),
        Some("https://graph.microsoft.com"),
        "Graph's address is a setting (the demo's emulator is elsewhere), Graph by default"
    );
    assert!(
        downstream(&wf.json, name(token)).contains(name(graph)),
        "Graph is called after the token is fetched"
    );
    assert_eq!(graph["parameters"]["sendHeaders"], true);
    let authorization: Vec<&str> = pairs(graph, "headerParameters")
        .into_iter()
        .filter(|(header, _)| header.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value)
        .collect();
    assert!(
        matches!(authorization.as_slice(), [value]
            if value.starts_with('=') && value.contains("Bearer {{") && value.contains("$json.access_token")),
        "one Authorization header, an expression over the fetched token: {authorization:?}"
    );
}

#[test]
fn the_all_users_recipe_reports_users_who_must_reconnect_instead_of_dropping_them() {
    let wf = workflow(ALL_USERS_FILE);
    let list = http_nodes(&wf.json)
        .find(|n| url(n).ends_with("/v1/service/integrations"))
        .unwrap_or_else(|| panic!("{ALL_USERS_FILE}: no call to the connection list"));
    let query = pairs(list, "queryParameters");
    assert!(query.contains(&("provider", "outlook")));
    assert!(
        !query.iter().any(|(name, _)| *name == "status"),
        "listing only `connected` loses needs_reauth users silently: {query:?}"
    );
    let attention = nodes(&wf.json)
        .iter()
        .find(|n| name(n) == "Needs attention")
        .expect("a Needs attention node");
    assert!(
        attention.to_string().contains("409"),
        "409 reauth_required has an action"
    );
}

#[test]
fn the_gmail_and_dropbox_recipes_read_through_the_proxy_without_a_token() {
    for (file, path, split, fields) in [
        (
            GMAIL_FILE,
            "/integrations/google/proxy/gmail/v1/users/me/messages",
            "messages",
            &["subject", "from", "received"][..],
        ),
        (
            DROPBOX_FILE,
            "/integrations/dropbox/proxy/2/files/list_folder",
            "entries",
            &["name", "path", "type"][..],
        ),
    ] {
        let wf = workflow(file);
        assert!(
            http_nodes(&wf.json).all(calls_connect),
            "{file}: only the service is called"
        );
        assert!(
            http_nodes(&wf.json).any(|n| url(n).contains(path)),
            "{file}: calls {path}"
        );
        assert!(
            !wf.text.contains("access_token"),
            "{file}: no node handles a token"
        );
        let splits = nodes(&wf.json).iter().any(|n| {
            node_type(n) == "n8n-nodes-base.splitOut" && n["parameters"]["fieldToSplitOut"] == split
        });
        assert!(splits, "{file}: splits {split}");
        let text = wf.json.to_string();
        for field in fields {
            assert!(
                text.contains(&format!("\"name\":\"{field}\"")),
                "{file}: keeps {field}"
            );
        }
    }
}

#[test]
fn no_workflow_saves_execution_data() {
    for wf in workflows() {
        assert_none(&wf.file, "execution saving", settings_problems(&wf.json));
    }
}

#[test]
fn the_readme_names_every_workflow() {
    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    for wf in workflows() {
        assert!(
            readme.contains(&wf.file),
            "README.md does not mention {}",
            wf.file
        );
    }
}

/// Runs the events recipe's Code node as n8n would (an async function with `$input`, `$env`,
/// `$getWorkflowStaticData`, `require` and `this.helpers`) on each request in turn, with one
/// workflow static data shared by all; returns each run's first output item.
fn run_verify_code(
    code: &str,
    secret_env: &str,
    requests: &[(Vec<(String, String)>, String)],
) -> Vec<Value> {
    const HARNESS: &str = r#"
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const node = new AsyncFunction('$input', '$env', '$getWorkflowStaticData', 'require', input.code);
const staticData = {};
(async () => {
  const out = [];
  for (const request of input.requests) {
    const item = { json: { headers: request.headers, body: JSON.parse(request.raw) }, binary: { data: {} } };
    const helpers = { getBinaryDataBuffer: async () => Buffer.from(request.raw, 'utf8') };
    const result = await node.call({ helpers }, { first: () => item }, { CONNECT_WEBHOOK_SECRET: input.secret }, () => staticData, require);
    out.push(result[0].json);
  }
  console.log(JSON.stringify(out));
})();
"#;
    let requests: Vec<Value> = requests
        .iter()
        .map(|(headers, raw)| {
            let headers: serde_json::Map<String, Value> =
                headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            json!({"headers": headers, "raw": raw})
        })
        .collect();
    let input = json!({"code": code, "secret": secret_env, "requests": requests});
    let mut child = std::process::Command::new("node")
        .args(["-e", HARNESS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs the Code node");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the Code node failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_events_recipe_verifies_signatures_and_sends_needs_reauth_to_attention() {
    use celeste_connect::webhooks::signing::{SigningSecret, generate_secret, signature_header};
    let wf = workflow(EVENTS_FILE);
    let webhook = node_named(&wf.json, "Connection events");
    assert_eq!(node_type(webhook), WEBHOOK);
    assert_eq!(webhook["parameters"]["httpMethod"], "POST");
    assert_eq!(webhook["parameters"]["responseMode"], "responseNode");
    assert_eq!(webhook["parameters"]["options"]["rawBody"], true);
    // Unsigned requests are refused; signed ones accepted, and needs_reauth goes on.
    let verify = downstream(&wf.json, "Connection events");
    for wanted in [
        "Verify signature",
        "Accept (204)",
        "Refuse (401)",
        "Needs attention",
    ] {
        assert!(verify.contains(wanted), "{wanted}");
    }
    let gate = &wf.json["connections"]["Signed by Celeste Connect?"]["main"];
    assert_eq!(gate[0][0]["node"], "Accept (204)");
    assert_eq!(gate[1][0]["node"], "Refuse (401)");
    assert!(downstream(&wf.json, "Needs reauth?").contains("Needs attention"));
    assert!(!downstream(&wf.json, "Refuse (401)").contains("Needs attention"));
    let needs = node_named(&wf.json, "Needs reauth?").to_string();
    assert!(needs.contains("connection.needs_reauth"), "{needs}");
    assert!(!wf.text.contains("whsec_MfKQ"), "no secret in the file");

    // The Code node itself, run on deliveries signed by the service's own signing code.
    let code = node_named(&wf.json, "Verify signature")["parameters"]["jsCode"]
        .as_str()
        .unwrap()
        .to_owned();
    let (current, old) = (generate_secret().unwrap(), generate_secret().unwrap());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = |kind: &str| {
        json!({"id": "msg_1", "type": kind, "timestamp": "2026-12-01T10:00:00.000Z",
               "data": {"user_id": "3f0e…", "provider": "microsoft", "status": "needs_reauth",
                        "reason": "invalid_grant", "provider_code": "AADSTS70008"}})
        .to_string()
    };
    let signed = |id: &str, ts: i64, raw: &str, secrets: &[&str]| {
        let secrets: Vec<SigningSecret> = secrets
            .iter()
            .map(|s| SigningSecret::parse(s).unwrap())
            .collect();
        let headers = vec![
            ("webhook-id".to_owned(), id.to_owned()),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            (
                "webhook-signature".to_owned(),
                signature_header(&secrets, id, ts, raw.as_bytes()),
            ),
        ];
        (headers, raw.to_owned())
    };
    let reauth = body("connection.needs_reauth");
    let mut tampered = signed("msg_2", now, &reauth, &[&current]);
    tampered.1 = tampered.1.replace("invalid_grant", "nothing_wrong");
    let results = run_verify_code(
        &code,
        &current,
        &[
            signed("msg_1", now, &reauth, &[&current]),
            signed("msg_1", now, &reauth, &[&current]),
            tampered,
            signed("msg_3", now - 3600, &reauth, &[&current]),
            signed("msg_4", now, &reauth, &[&old]),
            signed("msg_5", now, &body("connection.created"), &[&old, &current]),
        ],
    );
    assert_eq!(results[0]["valid"], true, "{results:?}");
    assert_eq!(results[0]["type"], "connection.needs_reauth");
    assert_eq!(results[0]["provider_code"], "AADSTS70008");
    assert_eq!(
        (&results[1]["valid"], &results[1]["duplicate"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(results[2]["reason"], "signature does not match");
    assert_eq!(results[3]["reason"], "timestamp too old or too new");
    assert_eq!(results[4]["valid"], false, "another secret's signature");
    assert_eq!(
        results[5]["valid"], true,
        "one of several signatures (rotation)"
    );
    // Without the secret in n8n's environment, nothing passes.
    let unset = run_verify_code(&code, "", &[signed("msg_6", now, &reauth, &[&current])]);
    assert_eq!(unset[0]["valid"], false);
}

#[test]
fn each_check_catches_a_planted_mistake() {
    let proxy = workflow(PROXY_FILE);
    let token = workflow(TOKEN_FILE);

    let planted = format!("Bearer ccsk_{}", "A".repeat(43));
    let text = proxy.text.replace(CREDENTIAL_NAME, &planted);
    assert!(!secret_problems(&text).is_empty(), "a pasted key");

    let mut dangling = proxy.json.clone();
    dangling["connections"]["Settings"]["main"][0][0]["node"] = json!("Nowhere");
    assert!(
        !structure_problems(&dangling).is_empty(),
        "a connection to no node"
    );

    let mut no_credential = proxy.json.clone();
    let http = nodes(&no_credential)
        .iter()
        .position(|n| node_type(n) == HTTP_REQUEST)
        .unwrap();
    no_credential["nodes"][http]["parameters"]["authentication"] = json!("none");
    no_credential["nodes"][http]
        .as_object_mut()
        .unwrap()
        .remove("credentials");
    assert!(
        !connect_call_problems(&no_credential).is_empty(),
        "a call without the key"
    );

    let mut key_to_microsoft = token.json.clone();
    let graph = nodes(&key_to_microsoft)
        .iter()
        .position(calls_graph)
        .unwrap();
    key_to_microsoft["nodes"][graph]["credentials"] =
        json!({"httpHeaderAuth": {"id": null, "name": CREDENTIAL_NAME}});
    assert!(
        !other_call_problems(&key_to_microsoft).is_empty(),
        "the key sent to Graph"
    );

    let mut saving = token.json.clone();
    saving["settings"]["saveDataSuccessExecution"] = json!("all");
    assert!(
        !settings_problems(&saving).is_empty(),
        "execution data saved"
    );
}

/// Renders one n8n parameter for the expression forms the recipes use: `$json.<field>` (the
/// incoming item) and `$('Settings').first().json.<field>`. Anything else fails the test, so a
/// recipe cannot grow an expression this check silently skips.
fn render(template: &str, settings: &Value, item: &Value) -> String {
    let Some(expression) = template.strip_prefix('=') else {
        return template.to_owned();
    };
    let mut out = String::new();
    let mut rest = expression;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closing }}") + start;
        let inner = rest[start + 2..end].trim();
        let (source, field) = if let Some(field) = inner.strip_prefix("$('Settings').first().json.")
        {
            (settings, field)
        } else if let Some(field) = inner.strip_prefix("$json.") {
            (item, field)
        } else {
            panic!("an expression this check does not evaluate: {inner}");
        };
        match &source[field] {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Sends the request an HTTP Request node describes, with the service key when the node uses
/// the credential, as n8n would.
async fn send_node(
    c: &crate::support::Connected,
    node: &Value,
    settings: &Value,
    item: &Value,
) -> reqwest::Response {
    let params = &node["parameters"];
    let method = params["method"].as_str().unwrap_or("GET");
    let mut target = url::Url::parse(&render(url(node), settings, item)).unwrap();
    for (k, v) in pairs(node, "queryParameters") {
        target
            .query_pairs_mut()
            .append_pair(k, &render(v, settings, item));
    }
    let mut request = c.app.http.request(method.parse().unwrap(), target);
    for (header, value) in pairs(node, "headerParameters") {
        request = request.header(header, render(value, settings, item));
    }
    if node["credentials"]["httpHeaderAuth"]["name"] == CREDENTIAL_NAME {
        request = request.bearer_auth(&c.app.service_key);
    }
    if params["sendBody"] == true {
        // The Dropbox recipe's one body expression, evaluated as n8n's JavaScript would.
        assert_eq!(
            params["jsonBody"],
            "={{ JSON.stringify({ path: $json.folder_path, limit: 100 }) }}"
        );
        request = request.json(&json!({"path": item["folder_path"], "limit": 100}));
    }
    request.send().await.unwrap()
}

fn node_named<'a>(wf: &'a Value, wanted: &str) -> &'a Value {
    nodes(wf)
        .iter()
        .find(|n| name(n) == wanted)
        .unwrap_or_else(|| panic!("no node {wanted:?}"))
}

#[tokio::test]
async fn every_recipes_requests_work_against_the_service_and_the_emulator() {
    use crate::support::{Backend, with_emulator};
    use uuid::Uuid;
    let c = with_emulator(Backend::Sqlite, provider_emulator::demo_accounts()).await;
    let (outlook, google, dropbox, gone) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    c.connect_to("outlook", outlook, "5f0a2c3e-8d41-4b7a-9c55-1e2f3a4b5c6d")
        .await;
    c.connect_to("outlook", gone, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
        .await;
    c.connect_to("google", google, "108234567890123456789")
        .await;
    c.connect_to("dropbox", dropbox, "dbid:AADx7bYc2qLcQ1m3vT9kP0sWnE4rUfHgJ")
        .await;
    c.app
        .exec(
            "update connect.integration_tokens set status = 'needs_reauth' where user_id = $1::uuid and $2::bigint = $2::bigint",
            "update integration_tokens set status = 'needs_reauth' where user_id = $1 and $2 = $2",
            gone,
            0,
        )
        .await;
    let connect_url = c.app.url("");
    let settings = |user: Uuid| json!({"connect_url": connect_url, "user_id": user.to_string(), "folder_path": "/Documents"});

    let wf = workflow(PROXY_FILE).json;
    let answer = send_node(
        &c,
        node_named(&wf, "Latest 10 emails via Connect proxy"),
        &settings(outlook),
        &settings(outlook),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let mail: Value = answer.json().await.unwrap();
    assert_eq!(mail["value"].as_array().unwrap().len(), 10);
    assert!(mail["value"][0]["subject"].is_string());

    let wf = workflow(TOKEN_FILE).json;
    let mut token_settings = settings(outlook);
    token_settings["graph_url"] = json!(c.emulator_base().as_str().trim_end_matches('/'));
    let token: Value = send_node(
        &c,
        node_named(&wf, "Get Outlook access token"),
        &token_settings,
        &token_settings,
    )
    .await
    .json()
    .await
    .unwrap();
    let graph = send_node(
        &c,
        node_named(&wf, "Latest 10 emails from Graph"),
        &token_settings,
        &token,
    )
    .await;
    assert_eq!(graph.status(), 200, "the token works at Graph");

    let wf = workflow(GMAIL_FILE).json;
    let ids: Value = send_node(
        &c,
        node_named(&wf, "Latest 10 Gmail message ids via Connect proxy"),
        &settings(google),
        &settings(google),
    )
    .await
    .json()
    .await
    .unwrap();
    let first = &ids["messages"][0];
    let message: Value = send_node(
        &c,
        node_named(&wf, "Message headers via Connect proxy"),
        &settings(google),
        first,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        message["payload"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Subject")
    );

    let wf = workflow(DROPBOX_FILE).json;
    let listing = send_node(
        &c,
        node_named(&wf, "List folder via Connect proxy"),
        &settings(dropbox),
        &settings(dropbox),
    )
    .await;
    assert_eq!(listing.status(), 200);
    let listing: Value = listing.json().await.unwrap();
    assert!(!listing["entries"].as_array().unwrap().is_empty());

    let wf = workflow(ALL_USERS_FILE).json;
    let page: Value = send_node(
        &c,
        node_named(&wf, "List Outlook connections"),
        &settings(outlook),
        &settings(outlook),
    )
    .await
    .json()
    .await
    .unwrap();
    let rows = page["connections"].as_array().unwrap();
    let reconnect = rows
        .iter()
        .find(|row| row["user_id"] == gone.to_string())
        .expect("the user who must reconnect is listed");
    assert_eq!(reconnect["status"], "needs_reauth");
    let read = send_node(
        &c,
        node_named(&wf, "Latest 10 emails via Connect proxy"),
        &settings(outlook),
        reconnect,
    )
    .await;
    assert_eq!(
        read.status(),
        409,
        "and lands in Needs attention with its 409"
    );
}
