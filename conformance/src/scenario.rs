//! Scenarios: language-neutral JSON files in `conformance/scenarios/`, run through a driver.
//!
//! Each run gives every user and group a suffix of its own, so scenarios never see each other's
//! data on a shared server. Expectations compare only the fields they name (server ids and times
//! are never named), message events of a conversation must come in order, and errors are matched
//! by their code's name.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::Duration,
};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use im_testkit::{Proxy, now_ms};

use crate::{
    driver::Driver,
    system::{Admin, Target},
};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    /// Unique, snake_case.
    pub name: String,
    /// What it shows, for people.
    #[serde(default)]
    pub description: String,
    /// The area it covers (`1:1`, `groups`, `sync`, ...).
    #[serde(default)]
    pub area: String,
    /// Users to create.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups to create: `{ "id", "owner", "members", "channel", "history" }`.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    /// What happens, in order.
    pub steps: Vec<Value>,
}

/// A group a scenario starts with.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupSpec {
    /// Its name in the scenario.
    pub id: String,
    /// Its owner.
    pub owner: String,
    /// Its other members.
    #[serde(default)]
    pub members: Vec<String>,
    /// A channel: only the owner and admins post.
    #[serde(default)]
    pub channel: bool,
    /// What members added later see: `from_join` (the server's default when absent) or `full`.
    #[serde(default)]
    pub history: Option<String>,
}

/// Every scenario in `dir`, by name.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut scenarios = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let scenario: Scenario =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        scenarios.push(scenario);
    }
    let mut names = HashSet::new();
    if let Some(dup) = scenarios.iter().find(|s| !names.insert(s.name.clone())) {
        return Err(format!("two scenarios are named {}", dup.name));
    }
    Ok(scenarios)
}

/// How long an expected event may take.
const EVENT_WITHIN: Duration = Duration::from_secs(10);

/// One run of a scenario.
struct Run<'a> {
    driver: &'a mut Driver,
    admin: Admin,
    target: &'a Target,
    proxy: &'a Proxy,
    suffix: String,
    /// Scenario session name -> user (scenario name).
    sessions: HashMap<String, String>,
    groups: HashSet<String>,
    /// Scenario media name -> the server's media id.
    media: HashMap<String, String>,
}

impl Run<'_> {
    fn user(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }

    /// A conversation named in a scenario (`d:alice:bob`, `g:team`) as it is on the server.
    fn conversation(&self, name: &str) -> String {
        if let Some(group) = name.strip_prefix("g:") {
            return format!("g:{}", self.user(group));
        }
        if let Some(users) = name.strip_prefix("d:") {
            let mut pair: Vec<String> = users.split(':').map(|u| self.user(u)).collect();
            pair.sort();
            return format!("d:{}", pair.join(":"));
        }
        name.to_owned()
    }

    /// The server's id of the media a scenario's `upload` step named.
    fn media_id(&self, name: &str) -> Result<String, String> {
        self.media
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no media {name:?} was uploaded before"))
    }

    /// An expectation with its names mapped to the server's.
    fn mapped(&self, expected: &Value) -> Value {
        let mut out = expected.clone();
        if let Some(map) = out.as_object_mut() {
            for key in ["from", "user"] {
                if let Some(v) = map.get(key).and_then(Value::as_str) {
                    let mapped = self.user(v);
                    map.insert(key.into(), json!(mapped));
                }
            }
            if let Some(v) = map.get("conversation").and_then(Value::as_str) {
                let mapped = self.conversation(v);
                map.insert("conversation".into(), json!(mapped));
            }
        }
        out
    }

    /// A session named in a step, as the driver knows it: with the run's suffix, so that no
    /// event of an earlier scenario's session can answer this one's expectations.
    fn session(&self, step: &Value, key: &str) -> Result<String, String> {
        step[key]
            .as_str()
            .map(|name| format!("{name}-{}", self.suffix))
            .ok_or_else(|| format!("the step needs \"{key}\": {step}"))
    }

    async fn command(&mut self, command: Value) -> Result<Value, String> {
        self.driver.call(command).await
    }

    async fn step(&mut self, step: &Value) -> Result<(), String> {
        let (action, args) = step
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.as_str() != "expect"))
            .ok_or_else(|| format!("a step names its action: {step}"))?;
        let expect = &step["expect"];
        match action.as_str() {
            "connect" => {
                let session = self.session(args, "as")?;
                let user = args["user"]
                    .as_str()
                    .ok_or("connect needs \"user\"")?
                    .to_owned();
                let device = args["device"].as_str().unwrap_or("phone");
                let token = self.admin.token(&self.user(&user), device).await?;
                let answer = self
                    .command(json!({
                        "cmd": "connect", "session": session, "url": self.proxy.url,
                        "api": self.target.api, "token": token, "device": device,
                    }))
                    .await?;
                check_ok(&answer)?;
                self.sessions.insert(session, user);
                Ok(())
            }
            "close" => {
                let name = args.as_str().ok_or("close names a session")?;
                let session = format!("{name}-{}", self.suffix);
                check_ok(
                    &self
                        .command(json!({"cmd": "close", "session": session}))
                        .await?,
                )
            }
            "send" => {
                let session = self.session(args, "as")?;
                let to = self.conversation(args["to"].as_str().unwrap_or_default());
                let mut command =
                    json!({"cmd": "send", "session": session, "conversation": to, "body": args});
                if let Some(name) = args["media"].as_str() {
                    command["body"]["kind"] = json!("media");
                    command["body"]["media_id"] = json!(self.media_id(name)?);
                }
                if let Some(id) = args["id"].as_str() {
                    command["client_msg_id"] = json!(id);
                }
                // `retry_ms`: an admin change (unmute, unblock) reaches the server's caches
                // through an event; the send is tried again until it has the expected outcome.
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(args["retry_ms"].as_u64().unwrap_or(0));
                loop {
                    let answer = self.command(command.clone()).await?;
                    match expect_answer(&answer, expect) {
                        Err(_) if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        outcome => return outcome,
                    }
                }
            }
            "send_many" => {
                let session = self.session(args, "as")?;
                let to = self.conversation(args["to"].as_str().unwrap_or_default());
                let count = args["count"].as_u64().unwrap_or(1);
                let cut_after = args["cut_after"].as_u64();
                let mut pending = Vec::new();
                for n in 0..count {
                    let command = json!({
                        "cmd": "send", "session": session, "conversation": to,
                        "client_msg_id": format!("{}-{n}", args["prefix"].as_str().unwrap_or("m")),
                        "body": {"text": format!("#{n}")},
                    });
                    pending.push(self.driver.start(command).await?);
                    if cut_after == Some(n) {
                        self.proxy.cut();
                    }
                }
                let mut seqs = HashSet::new();
                for p in pending {
                    let answer = p.answer().await?;
                    check_ok(&answer)?;
                    let seq = answer["seq"].as_u64().unwrap_or(0);
                    if !seqs.insert(seq) {
                        return Err(format!("seq {seq} acknowledged twice"));
                    }
                }
                Ok(())
            }
            "expect_messages" => {
                let session = self.session(args, "on")?;
                let conversation = self.conversation(args["to"].as_str().unwrap_or_default());
                let count = args["count"].as_u64().unwrap_or(0);
                let first = args["first_seq"].as_u64().unwrap_or(1);
                let mut ids = HashSet::new();
                for seq in first..first + count {
                    let in_conversation = |e: &Value| {
                        e["type"] == "message" && e["conversation"] == json!(conversation)
                    };
                    let event = self
                        .driver
                        .next_event(&session, EVENT_WITHIN, &in_conversation, &|_| false)
                        .await
                        .map_err(|e| format!("message {seq} of {conversation}: {e}"))?;
                    if event["seq"] != json!(seq) {
                        return Err(format!("expected seq {seq}, got {event}"));
                    }
                    if !ids.insert(event["client_msg_id"].to_string()) {
                        return Err(format!("shown twice: {event}"));
                    }
                }
                Ok(())
            }
            "see" => {
                let session = self.session(args, "on")?;
                let wanted = self.mapped(&args["event"]);
                let kind = wanted["type"].clone();
                let strict = kind == "message" || kind == "change";
                let conversation = wanted["conversation"].clone();
                let pick = |e: &Value| subset(&wanted, e);
                // Entries of the sought conversation must come in order: a different one first
                // is a failure.
                let out_of_order = |e: &Value| {
                    strict
                        && e["type"] == kind
                        && e["conversation"] == conversation
                        && !subset(&wanted, e)
                };
                self.driver
                    .next_event(&session, EVENT_WITHIN, &pick, &out_of_order)
                    .await
                    .map(drop)
                    .map_err(|e| format!("expected {wanted}: {e}"))
            }
            "no_event" => {
                let session = self.session(args, "on")?;
                let wanted = self.mapped(&args["event"]);
                let within = Duration::from_millis(args["within_ms"].as_u64().unwrap_or(300));
                let pick = |e: &Value| subset(&wanted, e);
                match self
                    .driver
                    .next_event(&session, within, &pick, &|_| false)
                    .await
                {
                    Ok(event) => Err(format!("an event that must not come came: {event}")),
                    Err(_) => Ok(()),
                }
            }
            "history" => {
                let session = self.session(args, "as")?;
                let to = self.conversation(args["to"].as_str().unwrap_or_default());
                let answer = self
                    .command(json!({
                        "cmd": "history", "session": session, "conversation": to,
                        "before": args["before"], "limit": args["limit"],
                    }))
                    .await?;
                expect_answer(&answer, expect)
            }
            "mark_read" => {
                let session = self.session(args, "as")?;
                let to = self.conversation(args["to"].as_str().unwrap_or_default());
                let answer = self
                    .command(json!({"cmd": "mark_read", "session": session, "conversation": to, "seq": args["seq"]}))
                    .await?;
                expect_answer(&answer, expect)
            }
            "typing" => {
                let session = self.session(args, "as")?;
                let to = self.conversation(args["to"].as_str().unwrap_or_default());
                let active = args["active"].as_bool().unwrap_or(true);
                check_ok(&self.command(json!({"cmd": "typing", "session": session, "conversation": to, "active": active})).await?)
            }
            "subscribe_presence" => {
                let session = self.session(args, "as")?;
                let users: Vec<String> = args["users"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|u| self.user(u))
                    .collect();
                let answer = self
                    .command(
                        json!({"cmd": "subscribe_presence", "session": session, "users": users}),
                    )
                    .await?;
                check_ok(&answer)?;
                if let Some(statuses) = expect["statuses"].as_object() {
                    for (user, status) in statuses {
                        let mapped = self.user(user);
                        let found = answer["presences"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|p| p["user"] == json!(mapped));
                        if found.map(|p| &p["status"]) != Some(status) {
                            return Err(format!("{user} is not {status}: {answer}"));
                        }
                    }
                }
                // Users whose presence the policy does not show: absent from the answer.
                for user in expect["hidden"].as_array().into_iter().flatten() {
                    let mapped = json!(self.user(user.as_str().unwrap_or_default()));
                    let listed = answer["presences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["user"] == mapped);
                    if listed {
                        return Err(format!("{user}'s presence was shown: {answer}"));
                    }
                }
                Ok(())
            }
            "set_presence" => {
                let session = self.session(args, "as")?;
                check_ok(
                    &self
                        .command(json!({"cmd": "set_presence", "session": session, "status": args["status"], "text": args["text"]}))
                        .await?,
                )
            }
            "conversations" => {
                let session = self.session(args, "as")?;
                let answer = self
                    .command(json!({"cmd": "conversations", "session": session}))
                    .await?;
                check_ok(&answer)?;
                if let Some(unread) = expect["unread"].as_object() {
                    for (conversation, count) in unread {
                        let id = self.conversation(conversation);
                        let found = answer["conversations"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|c| c["conversation"] == json!(id));
                        if found.map(|c| &c["unread_count"]) != Some(count) {
                            return Err(format!("{conversation}: unread is not {count}: {answer}"));
                        }
                    }
                }
                Ok(())
            }
            "leave_group" => {
                let session = self.session(args, "as")?;
                let group = self.user(args["group"].as_str().unwrap_or_default());
                let answer = self
                    .command(json!({"cmd": "leave_group", "session": session, "group": group}))
                    .await?;
                expect_answer(&answer, expect)
            }
            "upload" => {
                let session = self.session(args, "as")?;
                let name = args["name"].as_str().ok_or("upload needs \"name\"")?;
                let answer = self
                    .command(json!({
                        "cmd": "upload", "session": session, "kind": args["kind"],
                        "mime_type": args["mime_type"], "data_hex": args["data_hex"],
                        "file_name": args["file_name"],
                    }))
                    .await?;
                if let Some(id) = answer["media_id"].as_str() {
                    self.media.insert(name.to_owned(), id.to_owned());
                }
                expect_answer(&answer, expect)
            }
            "download" => {
                let session = self.session(args, "as")?;
                let media = self.media_id(args["media"].as_str().unwrap_or_default())?;
                let to = args["to"].as_str().map(|c| self.conversation(c));
                let answer = self
                    .command(json!({
                        "cmd": "download", "session": session, "media_id": media,
                        "conversation": to.unwrap_or_default(), "seq": args["seq"],
                    }))
                    .await?;
                expect_answer(&answer, expect)
            }
            "admin" => self.admin_step(args).await,
            "cut" => {
                self.proxy.cut();
                Ok(())
            }
            "drop_push" => {
                // The first push of entry `seq` in `to` is lost on the way: the client sees a
                // gap when the next entry comes, and must fill it.
                let conversation = self.conversation(args["to"].as_str().unwrap_or_default());
                let seq = args["seq"].as_u64().unwrap_or(1);
                let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                self.proxy.drop_frames(std::sync::Arc::new(move |frame| {
                    let is_it = matches!(
                        &frame.body,
                        Some(im_proto::v1::server_frame::Body::Message(m))
                            if m.conversation_id == conversation && m.seq == seq
                    );
                    is_it && !dropped.swap(true, std::sync::atomic::Ordering::SeqCst)
                }));
                Ok(())
            }
            "wait_ms" => {
                tokio::time::sleep(Duration::from_millis(args.as_u64().unwrap_or(100))).await;
                Ok(())
            }
            other => Err(format!("unknown step {other}")),
        }
    }

    /// Moderation and membership, as the app.
    async fn admin_step(&mut self, args: &Value) -> Result<(), String> {
        let user = |key: &str| self.user(args[key].as_str().unwrap_or_default());
        let (method, path, body) = match args["do"].as_str().unwrap_or_default() {
            "mute" => (
                Method::PUT,
                format!("/v1/groups/{}/members/{}/mute", user("group"), user("user")),
                json!({"until_ms": now_ms() + 3_600_000}),
            ),
            "unmute" => (
                Method::PUT,
                format!("/v1/groups/{}/members/{}/mute", user("group"), user("user")),
                json!({"until_ms": 0}),
            ),
            "block" => (
                Method::PUT,
                format!("/v1/users/{}/blocks/{}", user("user"), user("target")),
                json!({}),
            ),
            "unblock" => (
                Method::DELETE,
                format!("/v1/users/{}/blocks/{}", user("user"), user("target")),
                json!({}),
            ),
            "add_contact" => (
                Method::PUT,
                format!("/v1/users/{}/contacts/{}", user("user"), user("target")),
                json!({}),
            ),
            "add_members" => (
                Method::POST,
                format!("/v1/groups/{}/members", user("group")),
                json!({"user_ids": [user("user")]}),
            ),
            "remove_members" => (
                Method::POST,
                format!("/v1/groups/{}/members/remove", user("group")),
                json!({"user_ids": [user("user")]}),
            ),
            "make_admin" => (
                Method::PUT,
                format!("/v1/groups/{}/members/{}/role", user("group"), user("user")),
                json!({"role": "admin"}),
            ),
            "revoke" => (
                Method::POST,
                format!("/v1/users/{}/tokens/revoke", user("user")),
                json!({"device_id": args["device"].as_str().unwrap_or_default()}),
            ),
            "deactivate" => (
                Method::POST,
                format!("/v1/users/{}/deactivate", user("user")),
                json!({}),
            ),
            other => return Err(format!("unknown admin action {other}")),
        };
        self.admin.call(method, &path, Some(body)).await.map(drop)
    }
}

/// Whether every field `expected` names has that value in `actual` (objects recursively).
pub fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|x| subset(v, x))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| subset(x, y))
        }
        _ => expected == actual,
    }
}

fn check_ok(answer: &Value) -> Result<(), String> {
    if answer["ok"] == json!(true) {
        Ok(())
    } else {
        Err(format!("refused: {answer}"))
    }
}

/// An answer against an expectation: `{"error": "NAME"}` for a refusal, otherwise fields the
/// answer must have.
fn expect_answer(answer: &Value, expect: &Value) -> Result<(), String> {
    if let Some(name) = expect["error"].as_str() {
        return if answer["ok"] == json!(false) && answer["error"]["name"] == json!(name) {
            Ok(())
        } else {
            Err(format!("expected {name}, got {answer}"))
        };
    }
    check_ok(answer)?;
    if expect.is_null() || subset(expect, answer) {
        Ok(())
    } else {
        Err(format!("expected {expect}, got {answer}"))
    }
}

/// Runs one scenario; `Err` says what failed, at which step.
pub async fn run(
    scenario: &Scenario,
    driver: &mut Driver,
    target: &Target,
    proxy: &Proxy,
    suffix: &str,
) -> Result<(), String> {
    let admin = Admin::new(target);
    let mut run = Run {
        driver,
        admin: admin.clone(),
        target,
        proxy,
        suffix: suffix.to_owned(),
        sessions: HashMap::new(),
        groups: HashSet::new(),
        media: HashMap::new(),
    };
    for user in &scenario.users {
        admin.user(&run.user(user)).await?;
    }
    for group in &scenario.groups {
        let members: Vec<String> = group.members.iter().map(|m| run.user(m)).collect();
        admin
            .group(
                &run.user(&group.id),
                &run.user(&group.owner),
                &members,
                group.channel,
                group.history.as_deref(),
            )
            .await?;
        run.groups.insert(group.id.clone());
    }
    let mut outcome = Ok(());
    for (n, step) in scenario.steps.iter().enumerate() {
        if let Err(error) = run.step(step).await {
            outcome = Err(format!("step {}: {error}", n + 1));
            break;
        }
    }
    let sessions: Vec<String> = run.sessions.keys().cloned().collect();
    for session in sessions {
        let _ = run
            .driver
            .call(json!({"cmd": "close", "session": session}))
            .await;
    }
    outcome
}

/// The scenarios by area, for the docs.
pub fn by_area(scenarios: &[Scenario]) -> BTreeMap<String, Vec<String>> {
    let mut areas: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in scenarios {
        areas
            .entry(s.area.clone())
            .or_default()
            .push(s.name.clone());
    }
    areas
}
