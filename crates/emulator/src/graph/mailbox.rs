//! The seeded mailbox: a deterministic list of messages per account (same account, same
//! messages, newest first), shaped like Graph's message resource. Fixture data only; it must not
//! page, select or check permissions.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::config::TestAccount;

/// Every message property the emulator serves (the names `$select` accepts). `id` is always
/// returned, and Graph accepts it in `$select` too (the n8n recipes ask for it).
pub(crate) const MESSAGE_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
];

const SENDERS: &[(&str, &str)] = &[
    ("Megan Bowen", "megan.bowen@contoso.example"),
    ("Alex Wilber", "alex.wilber@contoso.example"),
    ("Microsoft Outlook", "no-reply@outlook.example"),
    ("Diego Siciliani", "diego.siciliani@fabrikam.example"),
    ("Isaiah Langer", "isaiah.langer@contoso.example"),
    ("Travel Desk", "travel@northwind.example"),
];

const SUBJECTS: &[&str] = &[
    "Weekly sync: agenda",
    "Q3 numbers & next steps",
    "Your itinerary for Seattle",
    "Re: Design review notes",
    "Lunch on Thursday?",
    "Invoice 2024-0173",
    "Welcome to the team!",
    "Action required: confirm your <shared> calendar",
    "Fwd: Customer feedback",
    "Project Falcon – status update",
    "Reminder: expense reports due Friday",
];

const PARAGRAPHS: &[&str] = &[
    "Hi, here is a quick update before our next meeting. The draft is in the shared folder.",
    "Thanks for the notes. I have added a few comments and a question about the timeline.",
    "Please review the attached figures and let me know if anything looks off.",
    "Just a reminder that the deadline is coming up. Reply if you need more time.",
];

/// Newest message time; fixed so runs are reproducible.
const NEWEST: OffsetDateTime = datetime!(2025-06-02 09:15:00 UTC);

/// The account's messages, newest first. `text_body`: `Prefer: outlook.body-content-type="text"`.
pub(crate) fn messages(account: &TestAccount, text_body: bool) -> Vec<Value> {
    (0..account.message_count)
        .map(|index| message(account, index, text_body))
        .collect()
}

fn message(account: &TestAccount, index: usize, text_body: bool) -> Value {
    let seed = digest::digest(
        &digest::SHA256,
        format!("{}:{index}", account.id).as_bytes(),
    );
    let seed = seed.as_ref();
    let pick = |salt: usize, len: usize| usize::from(seed[salt % seed.len()]) % len.max(1);
    let id = format!("AAMkAG{}", URL_SAFE.encode(&seed[..30]));
    let conversation_id = format!("AAQkAG{}", URL_SAFE.encode(&seed[2..20]));
    let change_key = format!("CQAAABYAAAD{}", URL_SAFE.encode(&seed[4..16]));
    let minutes = i64::try_from(index).unwrap_or(0) * 197;
    let received = NEWEST - Duration::minutes(minutes);
    let sent = received - Duration::seconds(42);
    let (sender_name, sender_address) = SENDERS[pick(0, SENDERS.len())];
    let subject = SUBJECTS[(index + pick(1, SUBJECTS.len())) % SUBJECTS.len()];
    let text = format!(
        "{}\r\n\r\n{}\r\n\r\n{sender_name}",
        PARAGRAPHS[pick(2, PARAGRAPHS.len())],
        PARAGRAPHS[pick(3, PARAGRAPHS.len())],
    );
    let preview: String = text.replace("\r\n", " ").chars().take(255).collect();
    let body = if text_body {
        json!({"contentType": "text", "content": text})
    } else {
        let html_text = crate::html::escape(&text).replace("\r\n", "<br>");
        json!({
            "contentType": "html",
            "content": format!(
                "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"></head>\
                 <body><div>{html_text}</div></body></html>"
            ),
        })
    };
    let me = json!({"emailAddress": {
        "name": account.display_name,
        "address": account.mail.clone().unwrap_or_else(|| account.user_principal_name.clone()),
    }});
    let sender = json!({"emailAddress": {"name": sender_name, "address": sender_address}});
    let folder = format!(
        "AQMkAG{}AAAEMAAAA",
        URL_SAFE.encode(digest::digest(&digest::SHA256, account.id.as_bytes()).as_ref())
    );
    json!({
        "@odata.etag": format!("W/\"{change_key}\""),
        "id": id,
        "createdDateTime": iso(received),
        "lastModifiedDateTime": iso(received + Duration::minutes(3)),
        "changeKey": change_key,
        "categories": [],
        "receivedDateTime": iso(received),
        "sentDateTime": iso(sent),
        "hasAttachments": index % 7 == 3,
        "internetMessageId": format!("<{}@mail.contoso.example>", hex(&seed[..10])),
        "subject": subject,
        "bodyPreview": preview,
        "importance": if index % 11 == 5 { "high" } else { "normal" },
        "parentFolderId": folder,
        "conversationId": conversation_id,
        "conversationIndex": URL_SAFE.encode(&seed[8..30]),
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": !index.is_multiple_of(3),
        "isDraft": false,
        "webLink": format!(
            "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        ),
        "inferenceClassification": if index % 4 == 2 { "other" } else { "focused" },
        "body": body,
        "sender": sender,
        "from": sender,
        "toRecipients": [me],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    })
}

fn iso(at: OffsetDateTime) -> String {
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
