//! The path template of a proxied call: the provider API path with every variable segment (ids,
//! email addresses, file paths, function arguments) replaced, so the activity log says *what
//! kind* of call was made (`/v1.0/me/messages/{id}`) without keeping the data it named, and so
//! the number of distinct rows stays bounded. The query string is never part of it.
//!
//! The rule, segment by segment (raw, still percent-encoded):
//! - a version (`v1`, `v1.0`, `v2beta1`, `beta`, or one or two digits) among the first two
//!   segments stays (`2/files/list_folder`, `gmail/v1/…`, `v1.0/me`);
//! - a name stays: letters, then letters, `_`, `-`, `.` or `$`, at most 40 characters, with at
//!   most one trailing digit (`messages`, `mailFolders`, `$value`, `list_folder`, `oauth2`);
//! - Graph's path addressing (`root:/Folder/report.pdf:/content`) becomes `root:{path}:`;
//! - a function call keeps its name (`delta()`, `range({args})`);
//! - anything else (digits, `@`, `%`, `=`, `+`, long or odd strings) becomes `{id}`.
//!
//! At most [`MAX_SEGMENTS`] segments are kept (then `{…}`).

/// Segments kept before the rest is folded into one `{…}`.
pub const MAX_SEGMENTS: usize = 12;

const MAX_NAME: usize = 40;

/// The template of `rest` (the part of the proxy path after `/proxy/`, no query), with a
/// leading `/`.
pub fn path_template(rest: &str) -> String {
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::with_capacity(rest.len().min(128) + 1);
    let mut in_item_path = false;
    let mut kept = 0;
    for (index, segment) in rest.split('/').filter(|s| !s.is_empty()).enumerate() {
        if in_item_path {
            // Inside `root:/…/name:`: nothing of the file path is kept.
            if segment.ends_with(':') {
                out.push_str("{path}:");
                in_item_path = false;
            }
            continue;
        }
        if kept == MAX_SEGMENTS {
            out.push_str("/{…}");
            break;
        }
        kept += 1;
        out.push('/');
        if let Some(name) = segment.strip_suffix(':').filter(|n| !n.is_empty()) {
            // Graph path addressing starts (`root:` or `items/{id}:`), then the item's path up
            // to a segment ending in `:`.
            out.push_str(if is_name(name) { name } else { "{id}" });
            out.push(':');
            in_item_path = true;
        } else if let Some((name, args)) = function_call(segment) {
            out.push_str(name);
            out.push_str(if args.is_empty() { "()" } else { "({args})" });
        } else if is_name(segment) || (index < 2 && is_version(segment)) {
            out.push_str(segment);
        } else {
            out.push_str("{id}");
        }
    }
    if in_item_path {
        out.push_str("{path}");
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `v1`, `v1.0`, `v2beta1`, `beta`, `1`, `2`.
fn is_version(segment: &str) -> bool {
    if segment == "beta" {
        return true;
    }
    if segment.len() <= 2 && segment.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits_end == 0 || digits_end > 3 {
        return false;
    }
    let tail = &rest[digits_end..];
    tail.is_empty()
        || tail
            .strip_prefix('.')
            .is_some_and(|t| !t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()))
        || ["alpha", "beta"].iter().any(|word| {
            tail.strip_prefix(word)
                .is_some_and(|t| t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// An API word: a letter or `$` first, then letters, `_`, `-`, `.`, `$`, and at most one digit
/// at the very end (`oauth2`).
fn is_name(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let Some((&first, _)) = bytes.split_first() else {
        return false;
    };
    if bytes.len() > MAX_NAME || !(first.is_ascii_alphabetic() || first == b'$') {
        return false;
    }
    let body = match bytes.split_last() {
        Some((last, body)) if last.is_ascii_digit() => body,
        _ => bytes,
    };
    body.iter()
        .all(|&b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'-' | b'.' | b'$'))
}

/// `name(args)`, for a name that [`is_name`].
fn function_call(segment: &str) -> Option<(&str, &str)> {
    let (name, rest) = segment.split_once('(')?;
    let args = rest.strip_suffix(')')?;
    is_name(name).then_some((name, args))
}

#[cfg(test)]
mod tests {
    use super::path_template as t;

    #[test]
    fn graph_paths_keep_their_shape_and_lose_their_ids() {
        assert_eq!(t("v1.0/me/messages"), "/v1.0/me/messages");
        assert_eq!(
            t("v1.0/me/messages/AAMkAGI2THVSAAA=/attachments/AAMkAGI2TAAB"),
            "/v1.0/me/messages/{id}/attachments/{id}"
        );
        assert_eq!(
            t("v1.0/me/messages/AAMkAGI2THVSAAA%3D?$select=subject"),
            "/v1.0/me/messages/{id}"
        );
        assert_eq!(
            t("v1.0/users/adele@contoso.com/events"),
            "/v1.0/users/{id}/events"
        );
        assert_eq!(
            t("v1.0/users/48d31887-5fad-4d73-a9f5-3c356e68a038"),
            "/v1.0/users/{id}"
        );
        assert_eq!(
            t("beta/me/mailFolders/inbox/messages/$count"),
            "/beta/me/mailFolders/inbox/messages/$count"
        );
        assert_eq!(
            t("v1.0/me/photos/48x48/$value"),
            "/v1.0/me/photos/{id}/$value"
        );
        assert_eq!(
            t("v1.0/me/drive/root:/Taxes/secret plans.docx:/content"),
            "/v1.0/me/drive/root:{path}:/content"
        );
        assert_eq!(
            t("v1.0/me/drive/root:/Reports/q3.pdf"),
            "/v1.0/me/drive/root:{path}"
        );
        assert_eq!(t("v1.0/me/messages/delta()"), "/v1.0/me/messages/delta()");
        assert_eq!(
            t("v1.0/me/drive/items/01BYE5RZ/workbook/worksheets('Sheet1')/range(address='A1:B2')"),
            "/v1.0/me/drive/items/{id}/workbook/worksheets({args})/range({args})"
        );
    }

    #[test]
    fn gmail_and_google_paths_keep_their_shape_and_lose_their_ids() {
        assert_eq!(
            t("gmail/v1/users/me/messages"),
            "/gmail/v1/users/me/messages"
        );
        assert_eq!(
            t("gmail/v1/users/me/messages/18c2f3a4b5d6e7f8"),
            "/gmail/v1/users/me/messages/{id}"
        );
        assert_eq!(
            t("gmail/v1/users/someone%40example.com/threads/18c2f3a4b5d6e7f8/modify"),
            "/gmail/v1/users/{id}/threads/{id}/modify"
        );
        assert_eq!(t("oauth2/v2/userinfo"), "/oauth2/v2/userinfo");
        assert_eq!(
            t("drive/v3/files/1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvW"),
            "/drive/v3/files/{id}"
        );
        assert_eq!(
            t("gmail/v1/users/me/messages/abcdefabcdefabcdefabcdefabcdefabcdefabcdef12"),
            "/gmail/v1/users/me/messages/{id}"
        );
    }

    #[test]
    fn dropbox_paths_keep_their_shape() {
        assert_eq!(t("2/files/list_folder"), "/2/files/list_folder");
        assert_eq!(
            t("2/files/list_folder/continue"),
            "/2/files/list_folder/continue"
        );
        assert_eq!(
            t("2/users/get_current_account"),
            "/2/users/get_current_account"
        );
        assert_eq!(t("2/files/download"), "/2/files/download");
    }

    #[test]
    fn versions_count_only_at_the_start_and_numbers_elsewhere_are_ids() {
        assert_eq!(t("v1.0/users/12"), "/v1.0/users/{id}");
        assert_eq!(
            t("v1.0/me/drive/items/01BYE5RZ:/Private/notes.txt:/content"),
            "/v1.0/me/drive/items/{id}:{path}:/content"
        );
        assert_eq!(t("123456/files"), "/{id}/files");
    }

    #[test]
    fn templates_are_bounded_and_never_empty() {
        assert_eq!(t(""), "/");
        assert_eq!(t("//v1.0//me"), "/v1.0/me");
        let long = "a/".repeat(40);
        let template = t(&long);
        assert_eq!(template.matches('/').count(), super::MAX_SEGMENTS + 1);
        assert!(template.ends_with("/{…}"));
        assert_eq!(t(&"x".repeat(41)), "/{id}");
    }
}
