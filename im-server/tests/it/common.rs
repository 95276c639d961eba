//! The embedded system for these tests (`im_testkit::Embedded`), built the ways the tests
//! need, and the raw client.

use std::sync::Arc;

use im_server::{push::PushHook, server::Parts, settings::CoreSettings, store::MessageStore};
pub(crate) use im_testkit::{Embedded as World, TOKEN_SECRET as SECRET, client::*, now_ms};

/// A system with the default settings.
pub(crate) async fn world() -> World {
    World::start().await
}

/// A system whose core settings `tune` adjusts.
pub(crate) async fn world_with(tune: impl FnOnce(&mut CoreSettings) + Send + 'static) -> World {
    World::builder().core(tune).start().await
}

/// A system whose message store `wrap` may wrap (to slow it down, say).
pub(crate) async fn world_with_store(
    tune: impl FnOnce(&mut CoreSettings) + Send + 'static,
    wrap: impl FnOnce(Arc<dyn MessageStore>) -> Arc<dyn MessageStore> + Send + 'static,
) -> World {
    World::builder()
        .core(tune)
        .parts(|parts| Parts {
            store: wrap(parts.store),
            ..parts
        })
        .start()
        .await
}

/// A system whose offline entries go to `push`.
pub(crate) async fn world_with_push(push: Arc<dyn PushHook>) -> World {
    World::builder()
        .parts(|parts| Parts { push, ..parts })
        .start()
        .await
}

/// The page a history or pull request was answered with.
pub(crate) fn page(body: im_proto::v1::server_frame::Body) -> im_proto::v1::MessagePage {
    match body {
        im_proto::v1::server_frame::Body::Messages(page) => page,
        other => panic!("not a page: {other:?}"),
    }
}

/// The answer to a sync request.
pub(crate) fn sync_of(body: im_proto::v1::server_frame::Body) -> im_proto::v1::SyncResponse {
    match body {
        im_proto::v1::server_frame::Body::Sync(sync) => sync,
        other => panic!("not a sync answer: {other:?}"),
    }
}

/// An error frame's code.
pub(crate) fn code(error: &im_proto::v1::Error) -> im_proto::v1::ErrorCode {
    error.code()
}

/// Appends length-delimited field `number` holding `bytes`: for frames written by hand, with
/// fields split, repeated or unknown.
pub(crate) fn put_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
