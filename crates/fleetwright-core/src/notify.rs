//! Notifications as data (pure): the one event document every report is, which sink wants
//! which event, and the HTTP request each kind of sink is sent — exactly each forge's
//! documented commit-status API, Slack-compatible incoming webhooks, ntfy, and the generic
//! JSON webhook. The host side (`fleetwright::notify`) reads tokens, sends and queues; nothing
//! here does I/O.
//!
//! - Gitea: `POST {url}/api/v1/repos/{owner}/{repo}/statuses/{sha}`, `Authorization: token T`,
//!   JSON `{state, target_url, description, context}` (state pending|success|error|failure|warning).
//! - GitHub: `POST {url}/repos/{owner}/{repo}/statuses/{sha}`, `Authorization: Bearer T`,
//!   `Accept: application/vnd.github+json`, a `User-Agent`; the same JSON (state
//!   error|failure|pending|success; description at most 140 characters).
//! - GitLab: `POST {url}/api/v4/projects/{url-encoded path or id}/statuses/{sha}`,
//!   `PRIVATE-TOKEN: T`, JSON `{state, name, description, target_url}` (state
//!   pending|running|success|failed|canceled).
//! - Slack-compatible (Slack, Mattermost, Discord's `/slack`): `POST {"text": …}`.
//! - ntfy: `POST` of the message as plain text, with `Title`, `Priority` and `Tags` headers.
//! - webhook: `POST` of the event document as JSON (the `--notify-url` of earlier versions).

use serde::{Deserialize, Serialize};

use crate::spec::model::{NotifySink, SinkKind, is_commit_event};

/// One report: a verdict on a commit, a commit about to be applied, an agent's failure or
/// recovery, a test. The generic webhook is sent exactly this document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique per report: a receiver that got it twice (delivery is at least once) can tell.
    pub id: String,
    /// One of `spec::model::NOTIFY_EVENTS`.
    pub event: String,
    /// The commit it is about: the verdict's, or the agent's deploy marker's (empty: unknown).
    pub commit: String,
    pub host: String,
    /// One line.
    pub message: String,
    pub at: String,
    pub last_good: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// systemd's Result= of the failed run (exit-code, signal, timeout, start-limit-hit, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// ExecMainStatus (an exit code or a signal number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    /// The last lines of the unit's journal for the failed run (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<String>,
    /// Failures folded into this report (a summary of a unit that kept failing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    /// Sent in this order; `Content-Type` among them.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a sink needs besides its spec, found on the host: its URL (read from `urlFile`), its
/// repository (written or taken from the followed repository's URL), its token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub url: String,
    pub repo: Option<String>,
    pub token: Option<String>,
}

/// GitHub's limit on a status description, and a sensible one for the others.
const DESCRIPTION_MAX: usize = 140;

/// Whether `sink` is sent `ev`: a forge gets commit events (and tests) only; then the sink's
/// `events` filter — without one, every event the kind shows, but `pending` only on a forge
/// (a status line that turns green or red; in a chat or a webhook it would be noise before
/// every verdict, so those get it only when `events` names it) — and its `agents` filter.
pub fn wants(sink: &NotifySink, ev: &Event) -> bool {
    if sink.kind.is_forge() && !(is_commit_event(&ev.event) || ev.event == "test") {
        return false;
    }
    if sink.kind.is_forge() && ev.commit.is_empty() {
        return false;
    }
    if sink.events.is_empty() {
        if ev.event == "pending" && !sink.kind.is_forge() {
            return false;
        }
    } else if !sink.events.contains(&ev.event) && ev.event != "test" {
        return false;
    }
    match (&ev.agent, sink.agents.is_empty()) {
        (Some(a), false) => sink.agents.contains(a),
        _ => true,
    }
}

/// The commit status of a forge for `event` (Gitea and GitHub's names; GitLab says `failed`).
pub fn status_state(kind: SinkKind, event: &str) -> &'static str {
    let state = match event {
        "pending" => "pending",
        "deployed" | "test" => "success",
        _ => "failure",
    };
    match (kind, state) {
        (SinkKind::Gitlab, "failure") => "failed",
        _ => state,
    }
}

/// The status context: one per host, so that each host of a fleet has its own line on the
/// commit (a test has its own, so it never hides a real status).
pub fn context(ev: &Event) -> String {
    if ev.event == "test" { format!("fleetwright/{}/test", ev.host) } else { format!("fleetwright/{}", ev.host) }
}

/// One line, at most `max` characters (cut at a character boundary, with an ellipsis).
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The short form of a commit id.
fn short(c: &str) -> &str {
    &c[..c.len().min(12)]
}

/// A status's description: what happened, in one line.
pub fn description(ev: &Event) -> String {
    let what = match ev.event.as_str() {
        "pending" => format!("applying on {}", ev.host),
        "deployed" => format!("running on {}", ev.host),
        "rolled-back" => format!("rolled back on {}", ev.host),
        "failed" => format!("failed on {}", ev.host),
        "invalid" => "invalid: not applied".to_string(),
        "held" => format!("held on {}", ev.host),
        "refused" => format!("refused on {}", ev.host),
        "test" => "fleetwright notify test".to_string(),
        other => other.to_string(),
    };
    let line = if ev.message.is_empty() || ev.event == "test" { what } else { format!("{what}: {}", ev.message) };
    one_line(&line, DESCRIPTION_MAX)
}

/// The subject line of a chat message or an ntfy title.
pub fn title(ev: &Event) -> String {
    let what = match ev.event.as_str() {
        "pending" => "applying",
        "deployed" => "deployed",
        "rolled-back" => "rolled back",
        "failed" => "deploy failed",
        "invalid" => "invalid commit",
        "held" => "commit held",
        "refused" => "commit refused",
        "agent-failed" => "agent failed",
        "agent-recovered" => "agent recovered",
        "test" => "test",
        other => other,
    };
    match (&ev.unit, ev.commit.is_empty()) {
        (Some(u), _) => format!("{}: {what}: {u}", ev.host),
        (None, false) => format!("{}: {what}: {}", ev.host, short(&ev.commit)),
        (None, true) => format!("{}: {what}", ev.host),
    }
}

/// The text of a chat message: the title, the message, the journal's lines.
pub fn text(ev: &Event) -> String {
    let mut t = format!("{}\n{}", title(ev), one_line(&ev.message, 1000));
    if let Some(n) = ev.count {
        t.push_str(&format!("\n({n} failures in all)"));
    }
    if !ev.journal.is_empty() {
        t.push_str("\n```\n");
        for l in &ev.journal {
            // A fence in a log line would end the block early.
            t.push_str(&l.replace("```", "'''"));
            t.push('\n');
        }
        t.push_str("```");
    }
    t
}

/// The link shown with a status or message: the sink's `targetUrl` with `{host}` and `{commit}`.
pub fn target_url(sink: &NotifySink, ev: &Event) -> Option<String> {
    sink.target_url.as_ref().map(|t| t.replace("{host}", &percent_encode(&ev.host)).replace("{commit}", &percent_encode(&ev.commit)))
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (GitLab wants a project
/// path as one segment: `group%2Fname`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request that tells `sink` of `ev`; Err when it cannot be made (a forge without a
/// repository or a token).
pub fn request(sink: &NotifySink, r: &Resolved, ev: &Event) -> Result<Request, String> {
    let json = vec![("Content-Type".to_string(), "application/json".to_string())];
    let base = r.url.trim_end_matches('/');
    let link = target_url(sink, ev);
    let forge = |path: String, auth: (String, String), mut extra: Vec<(String, String)>, body: serde_json::Value| {
        let mut headers = json.clone();
        headers.push(auth);
        headers.append(&mut extra);
        Request { url: format!("{base}{path}"), headers, body: body.to_string() }
    };
    let need_token = || r.token.clone().ok_or_else(|| format!("the {} sink has no token (tokenFile)", sink.kind.as_str()));
    let owner_repo = || {
        let repo = r.repo.as_deref().ok_or_else(|| {
            format!("the {} sink names no repository and the followed repository's URL names none either: set repo: owner/name", sink.kind.as_str())
        })?;
        match repo.split_once('/') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => Ok((percent_encode(o), percent_encode(n))),
            _ => Err(format!("{repo:?} is not owner/name")),
        }
    };
    Ok(match sink.kind {
        SinkKind::Gitea => {
            let (o, n) = owner_repo()?;
            let body = serde_json::json!({
                "state": status_state(sink.kind, &ev.event),
                "target_url": link.unwrap_or_default(),
                "description": description(ev),
                "context": context(ev),
            });
            forge(
                format!("/api/v1/repos/{o}/{n}/statuses/{}", ev.commit),
                ("Authorization".into(), format!("token {}", need_token()?)),
                vec![("Accept".into(), "application/json".into())],
                body,
            )
        }
        SinkKind::Github => {
            let (o, n) = owner_repo()?;
            let mut body = serde_json::json!({
                "state": status_state(sink.kind, &ev.event),
                "description": description(ev),
                "context": context(ev),
            });
            if let Some(l) = link {
                body["target_url"] = l.into();
            }
            forge(
                format!("/repos/{o}/{n}/statuses/{}", ev.commit),
                ("Authorization".into(), format!("Bearer {}", need_token()?)),
                vec![
                    ("Accept".into(), "application/vnd.github+json".into()),
                    ("X-GitHub-Api-Version".into(), "2022-11-28".into()),
                    ("User-Agent".into(), concat!("fleetwright/", env!("CARGO_PKG_VERSION")).into()),
                ],
                body,
            )
        }
        SinkKind::Gitlab => {
            let project = r
                .repo
                .as_deref()
                .ok_or_else(|| "the gitlab sink names no project and the followed repository's URL names none either: set project: group/name".to_string())?;
            let mut body = serde_json::json!({
                "state": status_state(sink.kind, &ev.event),
                "name": context(ev),
                "description": description(ev),
            });
            if let Some(l) = link {
                body["target_url"] = l.into();
            }
            forge(format!("/api/v4/projects/{}/statuses/{}", percent_encode(project), ev.commit), ("PRIVATE-TOKEN".into(), need_token()?), vec![], body)
        }
        SinkKind::Slack => {
            let mut t = text(ev);
            if let Some(l) = link {
                t.push_str(&format!("\n<{l}>"));
            }
            Request { url: r.url.clone(), headers: json, body: serde_json::json!({ "text": t }).to_string() }
        }
        SinkKind::Ntfy => {
            let (priority, tags) = match ev.event.as_str() {
                "agent-failed" | "rolled-back" | "failed" => ("high", "rotating_light"),
                "invalid" | "held" | "refused" => ("default", "warning"),
                "pending" => ("low", "hourglass"),
                _ => ("default", "white_check_mark"),
            };
            let mut headers = vec![
                ("Content-Type".to_string(), "text/plain; charset=utf-8".to_string()),
                // Header values are one line of visible ASCII-safe text.
                ("Title".to_string(), one_line(&title(ev), 200)),
                ("Priority".to_string(), priority.to_string()),
                ("Tags".to_string(), tags.to_string()),
            ];
            if let Some(l) = link {
                headers.push(("Click".into(), l));
            }
            if let Some(t) = &r.token {
                headers.push(("Authorization".into(), format!("Bearer {t}")));
            }
            let mut body = one_line(&ev.message, 1000);
            for l in &ev.journal {
                body.push('\n');
                body.push_str(l);
            }
            Request { url: r.url.clone(), headers, body }
        }
        SinkKind::Webhook => {
            let mut headers = json;
            if let Some(t) = &r.token {
                headers.push(("Authorization".into(), format!("Bearer {t}")));
            }
            Request { url: r.url.clone(), headers, body: serde_json::to_string(ev).expect("an event serializes") }
        }
    })
}

/// owner/name (or a GitLab project's path) from the URL of a repository: `git@host:o/n.git`,
/// `ssh://git@host:22/o/n.git`, `https://host/o/n`. None for a local path.
pub fn repo_from_url(url: &str) -> Option<String> {
    let path = if let Some(rest) =
        url.strip_prefix("ssh://").or_else(|| url.strip_prefix("https://")).or_else(|| url.strip_prefix("http://")).or_else(|| url.strip_prefix("git://"))
    {
        rest.split_once('/')?.1
    } else if !url.starts_with('/') && !url.starts_with('.') && !url.starts_with("file:") {
        // scp-like: [user@]host:path
        let (host, path) = url.split_once(':')?;
        if host.contains('/') {
            return None;
        }
        path
    } else {
        return None;
    };
    let path = path.trim_matches('/').trim_end_matches(".git").trim_start_matches('~');
    (path.contains('/') && !path.split('/').any(|w| w.is_empty() || w == "..")).then(|| path.to_string())
}

/// A sink's stable name (metrics label, queue key): its kind and where it sends.
pub fn sink_key(sink: &NotifySink) -> String {
    let place = sink.url.as_deref().or(sink.url_file.as_deref()).unwrap_or("");
    match &sink.repo {
        Some(r) => format!("{}:{place}:{r}", sink.kind.as_str()),
        None => format!("{}:{place}", sink.kind.as_str()),
    }
}

/// How a sink's answer is taken: sent, retried later, or refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Sent,
    /// Tried again with backoff: the receiver is down, overloaded, or not (yet) allowing it
    /// (a token being replaced: 401, 403, 404).
    Retry,
    /// The receiver understood and refused this request (400, 422): sending it again would not
    /// change that. Counted as failed and skipped, so that one bad report does not block the
    /// sink's queue.
    Rejected,
}

pub fn answer(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Sent,
        400 | 405 | 409 | 410 | 413 | 415 | 422 => Answer::Rejected,
        _ => Answer::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(kind: SinkKind) -> NotifySink {
        NotifySink {
            kind,
            url: Some("https://forge.example".into()),
            url_file: None,
            repo: Some("ops/fleet".into()),
            token_file: Some("/etc/t".into()),
            target_url: None,
            events: vec![],
            agents: vec![],
        }
    }
    fn ev(event: &str) -> Event {
        Event {
            id: "1".into(),
            event: event.into(),
            commit: "abc123".into(),
            host: "web1".into(),
            message: "it broke".into(),
            at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        }
    }
    fn resolved() -> Resolved {
        Resolved { url: "https://forge.example".into(), repo: Some("ops/fleet".into()), token: Some("T0K".into()) }
    }
    fn header<'a>(r: &'a Request, k: &str) -> Option<&'a str> {
        r.headers.iter().find(|(h, _)| h.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }

    #[test]
    fn gitea_github_and_gitlab_statuses_follow_each_forge_api() {
        let r = request(&sink(SinkKind::Gitea), &resolved(), &ev("rolled-back")).unwrap();
        assert_eq!(r.url, "https://forge.example/api/v1/repos/ops/fleet/statuses/abc123");
        assert_eq!(header(&r, "authorization"), Some("token T0K"));
        let b: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((b["state"].as_str(), b["context"].as_str()), (Some("failure"), Some("fleetwright/web1")));
        assert_eq!(b["description"], "rolled back on web1: it broke");

        let mut gh = sink(SinkKind::Github);
        gh.target_url = Some("https://dash.example/{host}/{commit}".into());
        let r = request(&gh, &Resolved { url: "https://api.github.com".into(), ..resolved() }, &ev("deployed")).unwrap();
        assert_eq!(r.url, "https://api.github.com/repos/ops/fleet/statuses/abc123");
        assert_eq!(header(&r, "authorization"), Some("Bearer T0K"));
        assert_eq!(header(&r, "accept"), Some("application/vnd.github+json"));
        assert!(header(&r, "user-agent").is_some_and(|u| u.starts_with("fleetwright/")));
        let b: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((b["state"].as_str(), b["target_url"].as_str()), (Some("success"), Some("https://dash.example/web1/abc123")));

        let r = request(&sink(SinkKind::Gitlab), &Resolved { repo: Some("group/sub/fleet".into()), ..resolved() }, &ev("failed")).unwrap();
        assert_eq!(r.url, "https://forge.example/api/v4/projects/group%2Fsub%2Ffleet/statuses/abc123");
        assert_eq!(header(&r, "private-token"), Some("T0K"));
        let b: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((b["state"].as_str(), b["name"].as_str()), (Some("failed"), Some("fleetwright/web1")));
        assert_eq!(status_state(SinkKind::Gitlab, "pending"), "pending");
    }

    #[test]
    fn a_forge_without_repository_or_token_is_an_error_not_a_request() {
        let e = request(&sink(SinkKind::Github), &Resolved { repo: None, ..resolved() }, &ev("deployed")).unwrap_err();
        assert!(e.contains("repo: owner/name"), "{e}");
        let e = request(&sink(SinkKind::Gitea), &Resolved { token: None, ..resolved() }, &ev("deployed")).unwrap_err();
        assert!(e.contains("tokenFile"), "{e}");
    }

    #[test]
    fn descriptions_are_one_bounded_line() {
        let mut e = ev("rolled-back");
        e.message = format!("line one\nline two {}", "x".repeat(300));
        let d = description(&e);
        assert!(!d.contains('\n') && d.chars().count() == DESCRIPTION_MAX && d.ends_with('…'), "{d}");
    }

    #[test]
    fn chat_ntfy_and_webhook_bodies() {
        let mut e = ev("agent-failed");
        e.unit = Some("agent-job.service".into());
        e.agent = Some("job".into());
        e.journal = vec!["boom: disk full".into()];
        let mut slack = sink(SinkKind::Slack);
        slack.repo = None;
        let r = request(&slack, &Resolved { url: "https://hooks.example/x".into(), repo: None, token: None }, &e).unwrap();
        let b: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let text = b["text"].as_str().unwrap();
        assert!(text.starts_with("web1: agent failed: agent-job.service") && text.contains("boom: disk full"), "{text}");
        let r =
            request(&NotifySink { kind: SinkKind::Ntfy, ..slack.clone() }, &Resolved { url: "https://ntfy.sh/t".into(), repo: None, token: None }, &e).unwrap();
        assert_eq!((header(&r, "priority"), header(&r, "title")), (Some("high"), Some("web1: agent failed: agent-job.service")));
        assert!(r.body.starts_with("it broke\nboom: disk full"), "{}", r.body);
        let r =
            request(&NotifySink { kind: SinkKind::Webhook, ..slack }, &Resolved { url: "https://h.example".into(), repo: None, token: Some("s".into()) }, &e)
                .unwrap();
        let back: Event = serde_json::from_str(&r.body).unwrap();
        assert_eq!(back, e);
        assert_eq!(header(&r, "authorization"), Some("Bearer s"));
    }

    #[test]
    fn filters_and_what_a_forge_shows() {
        let mut s = sink(SinkKind::Gitea);
        let mut failed = ev("agent-failed");
        failed.agent = Some("job".into());
        assert!(!wants(&s, &failed), "a forge shows commit statuses only");
        assert!(wants(&s, &ev("pending")));
        assert!(!wants(&sink(SinkKind::Slack), &ev("pending")), "pending goes to a chat only when asked for");
        s.events = vec!["deployed".into()];
        assert!(!wants(&s, &ev("pending")) && wants(&s, &ev("deployed")));
        let mut w = sink(SinkKind::Webhook);
        w.agents = vec!["other".into()];
        assert!(!wants(&w, &failed) && wants(&w, &ev("deployed")), "the agents filter leaves commit events alone");
        w.agents = vec!["job".into()];
        assert!(wants(&w, &failed));
    }

    #[test]
    fn the_repository_comes_from_the_followed_url() {
        for (url, want) in [
            ("git@git.example.com:ops/fleet.git", Some("ops/fleet")),
            ("ssh://git@git.example.com:2222/ops/fleet.git", Some("ops/fleet")),
            ("https://github.com/ops/fleet", Some("ops/fleet")),
            ("https://gitlab.example.com/group/sub/fleet.git/", Some("group/sub/fleet")),
            ("/srv/git/fleet.git", None),
            ("file:///srv/fleet", None),
            ("https://example.com/fleet", None),
        ] {
            assert_eq!(repo_from_url(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn answers_retry_unless_the_request_itself_is_refused() {
        assert_eq!(answer(201), Answer::Sent);
        assert_eq!(answer(503), Answer::Retry);
        assert_eq!(answer(401), Answer::Retry);
        assert_eq!(answer(422), Answer::Rejected);
    }
}
