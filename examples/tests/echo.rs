//! The echo bot answers a real client through a real embedded server.

#![allow(clippy::unwrap_used)]

use im_sdk_rust::Event;
use im_testkit::{
    Embedded,
    sdk::{client, collect_until, messages_in},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_bot_answers_each_message_once() {
    let mut server = Embedded::builder()
        .core(|s| s.messaging.messages_per_second = 10_000)
        .start()
        .await;
    server.users(&["alice", "echo"]).await;
    let bot = client(server.addr, "echo", "bot");
    let bot_events = bot.events().unwrap();
    let running = tokio::spawn(async move { im_examples::echo_bot(&bot, bot_events).await });

    let alice = client(server.addr, "alice", "phone");
    let mut events = alice.events().unwrap();
    for text in ["one", "two", "three"] {
        alice.send_text("d:alice:echo", text).await.unwrap();
    }
    let seen = collect_until(&mut events, |e| messages_in(e, "d:alice:echo").len() >= 6).await;
    let texts: Vec<(u64, String)> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => m.body_text().map(|t| (m.seq, t.to_owned())),
            _ => None,
        })
        .collect();
    let seq_of = |text: &str| texts.iter().find(|(_, t)| t == text).unwrap().0;
    assert_eq!(
        texts.len(),
        6,
        "three messages, three echoes, none twice: {texts:?}"
    );
    for text in ["one", "two", "three"] {
        assert!(seq_of(text) < seq_of(&format!("echo: {text}")));
    }
    running.abort();
    server.stop().await;
}
