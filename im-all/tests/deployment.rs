//! docs/DEPLOYMENT.md, followed on one machine: its `cluster.toml` with the example hosts
//! replaced by this machine's services, the database created as it says, and its "on one
//! machine" commands run as written, in its order (the business node first). Then a message
//! crosses two of the core nodes. A change to the doc that breaks its own instructions fails
//! here; a change that moves the example hosts says which substitution no longer matches.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use im_conformance::system::{Admin, Target};
use im_sdk_rust::{ClientBuilder, Event, StaticToken, direct_conversation_id};
use im_testkit::sidecar::{Proc, Sidecar};

const DOC: &str = include_str!("../../docs/DEPLOYMENT.md");
const BIN: &str = env!("CARGO_BIN_EXE_im-server");

/// The first ```` ```lang ```` block after `marker` in the doc.
fn block_after(marker: &str, lang: &str) -> &'static str {
    let at = DOC
        .find(marker)
        .unwrap_or_else(|| panic!("docs/DEPLOYMENT.md no longer says {marker:?}"));
    let open = format!("```{lang}\n");
    let start = at + DOC[at..].find(&open).expect("a code block follows") + open.len();
    let end = start + DOC[start..].find("```").expect("the block ends");
    &DOC[start..end]
}

/// A shell block's commands: continuation lines joined, comments and blank lines left out.
fn commands(block: &str) -> Vec<String> {
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// One documented command: its `NAME=value` prefix and its arguments after `im-server`.
struct Documented {
    env: Vec<(String, String)>,
    args: Vec<String>,
}

fn parse(command: &str) -> Documented {
    let mut words = command.split_whitespace();
    let mut env = Vec::new();
    for word in words.by_ref() {
        if word == "im-server" {
            let args = words.map(str::to_owned).collect();
            return Documented { env, args };
        }
        let (name, value) = word
            .split_once('=')
            .unwrap_or_else(|| panic!("{command:?}: {word:?} is neither NAME=value nor im-server"));
        env.push((name.to_owned(), value.to_owned()));
    }
    panic!("{command:?} does not run im-server")
}

impl Documented {
    /// Runs it in `dir` (where `cluster.toml` is), its output in `<dir>/<name>.log`.
    fn spawn(&self, dir: &Path, name: &str) -> Proc {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc::new(child)
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `text` with `from` replaced by `to`, which must occur in it.
fn substitute(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the cluster.toml of docs/DEPLOYMENT.md no longer has {from:?}: update this test"
    );
    text.replace(from, to)
}

/// A TOML value of `section`: `key = "value"`, as the doc writes it.
fn value_of(toml: &str, section: &str, key: &str) -> String {
    let table: toml::Table = toml.parse().expect("the doc's cluster.toml parses");
    table[section][key].as_str().unwrap().to_owned()
}

/// Waits until `url` answers 200, or panics with the log of `name`.
async fn ready(url: &str, proc: &mut Proc, dir: &Path, name: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        let exited = proc.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            panic!("{name} is not ready at {url} ({exited:?}): {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_one_machine_cluster_of_the_deployment_doc_runs_as_written() {
    let Some(postgres) = im_testkit::service_url("IM_TEST_POSTGRES_URL", "the deployment doc")
    else {
        return;
    };
    let Some(s3) = im_testkit::service_url("IM_TEST_S3_URL", "the deployment doc") else {
        return;
    };
    let s3: reqwest::Url = s3.parse().expect("IM_TEST_S3_URL is a URL");
    let (Ok(nats), Ok(redis)) = (Sidecar::nats(true), Sidecar::redis()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server and redis-server: ./scripts/services start installs them"
        );
        eprintln!("SKIPPED: nats-server or redis-server is missing");
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // The doc's cluster.toml, its hosts replaced by this machine's; servers of tests bind to
    // loopback only.
    let documented = block_after("`cluster.toml`, shared by every node:", "toml");
    let missing = format!(
        "{}/im_deployment_missing_{}",
        postgres.rsplit_once('/').unwrap().0,
        uuid::Uuid::new_v4().simple()
    );
    let s3_endpoint = format!("http://{}:{}", s3.host_str().unwrap(), s3.port().unwrap());
    let config = |database: &str| {
        let mut toml = documented.to_owned();
        for (from, to) in [
            ("nats://10.0.0.10:4222", nats.url.as_str()),
            ("redis://10.0.0.30:6379", redis.url.as_str()),
            ("postgres://im:secret@10.0.0.20:5432/im", database),
            // Nothing listens there: pushes wait for a webhook, as they would for a down one.
            (
                "http://10.0.0.40:8080/im-push",
                "http://127.0.0.1:9/im-push",
            ),
            ("http://10.0.0.50:9000", s3_endpoint.as_str()),
            (
                "access_key = \"im\"",
                &format!("access_key = \"{}\"", s3.username()),
            ),
            (
                "secret_key = \"the bucket's secret key\"",
                &format!("secret_key = \"{}\"", s3.password().unwrap()),
            ),
            ("0.0.0.0:", "127.0.0.1:"),
        ] {
            toml = substitute(toml, from, to);
        }
        std::fs::write(dir.path().join("cluster.toml"), toml).unwrap();
    };
    let runs = commands(block_after("To try it **on one machine**", "sh"));
    assert_eq!(
        runs.len(),
        4,
        "a business node and three core nodes: {runs:?}"
    );
    let business = parse(&runs[0]);
    assert!(
        business
            .args
            .ends_with(&["--services".into(), "business".into()]),
        "the business node starts first: {:?}",
        runs[0]
    );

    // "The database named in `database` must exist": without it, the node says so and exits.
    config(&missing);
    let mut refused = business.spawn(dir.path(), "business-without-database");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a node without its database exits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("business-without-database.log")).unwrap();
    assert!(!status.success(), "{log}");
    let name = missing.rsplit('/').next().unwrap();
    assert!(log.contains(name), "the error names the database: {log}");

    // `CREATE DATABASE im;`, then the commands in their order.
    let database = im_testkit::db::fresh_postgres(&postgres, "im_deployment").await;
    config(&database);
    let toml = std::fs::read_to_string(dir.path().join("cluster.toml")).unwrap();
    let mut business_proc = business.spawn(dir.path(), "business");
    let ops = value_of(&toml, "business", "ops_listen");
    ready(
        &format!("http://{ops}/readyz"),
        &mut business_proc,
        dir.path(),
        "business",
    )
    .await;
    let mut gateways = Vec::new();
    let mut cores = Vec::new();
    for run in &runs[1..] {
        let core = parse(run);
        let id = core
            .var("IM_CLUSTER__NODE_ID")
            .expect("each core node has its id");
        let listen = core
            .var("IM_CORE__LISTEN")
            .expect("its own gateway address");
        let http = core
            .var("IM_CORE__HTTP_LISTEN")
            .expect("its own health address");
        let mut proc = core.spawn(dir.path(), id);
        ready(&format!("http://{http}/readyz"), &mut proc, dir.path(), id).await;
        gateways.push(format!("ws://{listen}/ws"));
        cores.push(proc);
    }

    // The app backend calls the business API with the documented secret; two users on the
    // first and the last core node talk.
    let admin = Admin::new(&Target {
        url: String::new(),
        api: format!("http://{}", value_of(&toml, "business", "http_listen")),
        app_secret: value_of(&toml, "business", "app_secret"),
    });
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
    let mut clients = Vec::new();
    for (user, gateway) in [(&alice, &gateways[0]), (&bob, &gateways[2])] {
        admin.user(user).await.unwrap();
        let token = admin.token(user, "laptop").await.unwrap();
        let client = ClientBuilder::new(gateway.clone(), "laptop", Arc::new(StaticToken(token)))
            .build()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), client.wait_connected())
            .await
            .expect("connects in time")
            .unwrap();
        clients.push(client);
    }
    let mut bobs_events = clients[1].events().unwrap();
    let conversation = direct_conversation_id(&alice, &bob).unwrap();
    clients[0]
        .send_text(&conversation, "through the documented cluster")
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = bobs_events.next().await {
            if let Event::Message(message) = event
                && message.sender_user_id == alice
            {
                return message.body_text().map(str::to_owned);
            }
        }
        panic!("bob's events ended");
    })
    .await
    .expect("bob gets the message on another core node");
    assert_eq!(received.as_deref(), Some("through the documented cluster"));
    drop(cores);
}
