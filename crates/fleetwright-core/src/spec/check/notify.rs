//! The Fleet's `notify` list: each sink checked where it is written, credentials refused in
//! the repository (tokens and secret URLs come from files on the host, inside `credentialDirs`).

use super::*;

/// An http(s) URL on one line, without credentials in it.
fn check_url(s: &str) -> Result<(), String> {
    check_text(s)?;
    let Some(rest) = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")) else {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{s:?} names no host"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{s:?} holds credentials (user:password@); never put a credential in the repository: write the token to a file on the host and name it with tokenFile"
        ));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("{s:?} contains a space; encode it as %20"));
    }
    Ok(())
}

/// One entry of the Fleet's `notify` list.
pub(super) fn check_notify(cx: &mut Ctx, at: &str, n: &NotifySpec, fleet: &Fleet) -> Option<NotifySink> {
    let p = |f: &str| format!("{at}.{f}");
    let mut ok = true;
    for (field, v) in [("token", &n.token), ("password", &n.password), ("secret", &n.secret)] {
        if v.is_some() {
            cx.err(
                &p(field),
                format!(
                    "{field}: a credential is never written in the repository (every clone, every review and the history keep it); write it to a file on the host, readable by root only, and name that file with tokenFile: /etc/fleetwright/secrets/notify.token"
                ),
            );
            ok = false;
        }
    }
    let Some(kind_text) = n.kind.as_deref() else {
        cx.missing("kind", at, format!("{at}: kind is required: one of {}", SinkKind::ALL.join(", ")));
        return None;
    };
    let kind = SinkKind::parse(cx.one_of(&p("kind"), Some(kind_text), &SinkKind::ALL)?.as_str())?;
    let mut url = None;
    if let Some(u) = &n.url {
        match check_url(u) {
            Ok(()) => url = Some(u.trim_end_matches('/').to_string()),
            Err(e) => {
                cx.err(&p("url"), format!("url: {e}"));
                ok = false;
            }
        }
    }
    // Root reads these files and sends what they hold to a URL of the repository's choosing:
    // only from where root reads agents' credentials (credentialDirs), never /etc/shadow.
    let url_file = cx.path_with(&p("urlFile"), n.url_file.as_ref(), secret_file_check(fleet));
    if n.url_file.is_some() && url_file.is_none() {
        ok = false;
    }
    match (kind, n.url.is_some(), n.url_file.is_some()) {
        (_, true, true) => {
            cx.err(&p("urlFile"), "urlFile: give either url or urlFile, not both");
            ok = false;
        }
        (SinkKind::Github, false, false) => url = Some(GITHUB_API.to_string()),
        (SinkKind::Gitea | SinkKind::Gitlab | SinkKind::Github, _, true) => {
            cx.err(&p("urlFile"), format!("urlFile: a {} sink takes the forge's address as url (its token goes in tokenFile)", kind.as_str()));
            ok = false;
        }
        (_, false, false) => {
            let hint = match kind {
                SinkKind::Gitea => r#"url: "https://git.example.com""#,
                SinkKind::Gitlab => r#"url: "https://gitlab.example.com""#,
                SinkKind::Ntfy => r#"url: "https://ntfy.sh/my-topic""#,
                SinkKind::Slack => "urlFile: /etc/fleetwright/secrets/slack.url (a Slack webhook's URL is its secret)",
                _ => r#"url: "https://hooks.example.com/fleet""#,
            };
            cx.missing("url", at, format!("{at}: a {} sink needs where to send: {hint}", kind.as_str()));
            ok = false;
        }
        _ => {}
    }
    let mut repo = None;
    match (kind, &n.repo, &n.project) {
        (SinkKind::Gitea | SinkKind::Github, Some(r), None) => {
            let parts: Vec<&str> = r.split('/').collect();
            let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) && w != "." && w != "..";
            if parts.len() == 2 && parts.iter().all(|w| word(w)) {
                repo = Some(r.trim_end_matches(".git").to_string());
            } else {
                cx.err(&p("repo"), format!("repo: {r:?} is not owner/name, like ops/fleet"));
                ok = false;
            }
        }
        (SinkKind::Gitlab, None, Some(pr)) => {
            let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) && w != "." && w != "..";
            if pr.split('/').all(word) {
                repo = Some(pr.trim_end_matches(".git").to_string());
            } else {
                cx.err(&p("project"), format!("project: {pr:?} is not a project path (group/name) or numeric id"));
                ok = false;
            }
        }
        (SinkKind::Gitlab, Some(_), _) => {
            cx.err(&p("repo"), "repo: a gitlab sink names its project with project: group/name");
            ok = false;
        }
        (SinkKind::Gitea | SinkKind::Github, _, Some(_)) => {
            cx.err(&p("project"), format!("project: a {} sink names its repository with repo: owner/name", kind.as_str()));
            ok = false;
        }
        (_, Some(_), _) | (_, _, Some(_)) => {
            let f = if n.repo.is_some() { "repo" } else { "project" };
            cx.err(&p(f), format!("{f}: only a forge (gitea, github, gitlab) sink shows commit statuses of a repository; remove it"));
            ok = false;
        }
        _ => {}
    }
    let token_file = cx.path_with(&p("tokenFile"), n.token_file.as_ref(), secret_file_check(fleet));
    if n.token_file.is_some() && token_file.is_none() {
        ok = false;
    }
    if kind.is_forge() && n.token_file.is_none() {
        cx.missing(
            "tokenFile",
            at,
            format!(
                "{at}: a {} sink needs tokenFile: the absolute path of a file on the host holding an API token allowed to set commit statuses",
                kind.as_str()
            ),
        );
        ok = false;
    }
    if kind == SinkKind::Slack && n.token_file.is_some() {
        cx.err(&p("tokenFile"), "tokenFile: a Slack-compatible webhook takes no token: its URL is the secret, give it as urlFile");
        ok = false;
    }
    let mut target_url = None;
    if let Some(t) = &n.target_url {
        match check_url(t) {
            Ok(()) => target_url = Some(t.clone()),
            Err(e) => {
                cx.err(&p("targetUrl"), format!("targetUrl: {e}"));
                ok = false;
            }
        }
    }
    let mut events = Vec::new();
    for (i, e) in cx.typed(&p("events"), &n.events).cloned().unwrap_or_default().into_iter().enumerate() {
        match cx.one_of(&p(&format!("events.{i}")), Some(&e), &NOTIFY_EVENTS) {
            Some(e) if kind.is_forge() && !is_commit_event(&e) && e != "test" => {
                cx.err(
                    &p(&format!("events.{i}")),
                    format!("events: a forge shows commit statuses only; {e:?} is not about a commit (send it to a webhook, slack or ntfy sink)"),
                );
                ok = false;
            }
            Some(e) => events.push(e),
            None => ok = false,
        }
    }
    let mut agents = Vec::new();
    for (i, a) in cx.typed(&p("agents"), &n.agents).cloned().unwrap_or_default().into_iter().enumerate() {
        if check_agent_name(&a).is_err() {
            cx.err(&p(&format!("agents.{i}")), format!("agents: {a:?} is not an agent name"));
            ok = false;
        } else {
            agents.push(a);
        }
    }
    ok.then_some(NotifySink { kind, url, url_file, repo, token_file, target_url, events, agents })
}
