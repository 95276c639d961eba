//! Scenario `media`: uploads as an app makes them. Uploaders at once each create an upload
//! on the business API, PUT the bytes (a PNG of `size` bytes, distinct per upload, so every
//! one is hashed and kept) to the signed URL, and complete it; the figures are uploads
//! completed per second, bytes per second and the latency of the three steps together.
//!
//! Baseline: the same number of PUTs of the same bytes at the same concurrency to signed URLs
//! of the same store (uploads created beforehand and never completed): what the store takes
//! in without the create, the check at completion and the copy under the digest.
//!
//! Thumbnails: real photographs' worth of pixels (PNGs of noise, about `size` bytes, distinct
//! per upload) are uploaded, then completed, timed alone: complete answers once processing has
//! made the thumbnails, so its latency is complete-to-thumbnail. Baseline: decoding the same
//! PNGs in the bench's own process, the floor of that work. It runs on
//! the embedded disk store always, and on S3 when `IM_BENCH_S3_URL` (or the test services'
//! `IM_TEST_S3_URL`, `http://key:secret@host:port`) names a MinIO or S3 server.

use std::sync::Arc;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::{Ctx, first_env};
use crate::{
    procs::Server,
    report::{Outcome, Row},
    util::{Result, human_count, human_us, now_ms, open_many, quantiles},
};

/// What an upload is: a PNG signature, then bytes that make each upload distinct.
fn png_of(size: usize, n: usize) -> Vec<u8> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(SIGNATURE);
    let mut state = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while bytes.len() < size {
        // xorshift: cheap bytes that do not compress into one another.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// A PNG of noise about `size` bytes long (noise does not compress), distinct per `n`: an
/// image processing decodes and thumbnails, as it would a photograph.
fn photo_of(size: usize, n: usize) -> Vec<u8> {
    // RGB, 3 bytes a pixel, square.
    let side = ((size / 3) as f64).sqrt() as u32;
    let mut state = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pixels = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [r, g, b, ..] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut png = Vec::with_capacity(size + 4096);
    image::DynamicImage::ImageRgb8(pixels)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("a PNG encodes in memory");
    png
}

/// Where the media go.
#[derive(Debug, Clone)]
enum Store {
    /// The embedded default: the disk under the data directory.
    Disk,
    /// A bucket on the S3 or MinIO server at this URL (credentials in its user info).
    S3(String),
}

impl Store {
    fn configured() -> Vec<Self> {
        let mut stores = vec![Self::Disk];
        if let Some(url) = first_env(["IM_BENCH_S3_URL", "IM_TEST_S3_URL"]) {
            stores.push(Self::S3(url));
        }
        stores
    }

    fn key(&self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::S3(_) => "s3",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::S3(_) => "MinIO/S3",
        }
    }

    /// The server settings that put media here, in a bucket of this run's own.
    fn env(&self) -> Result<Vec<(&'static str, String)>> {
        let Self::S3(url) = self else {
            return Ok(Vec::new());
        };
        let parsed = reqwest::Url::parse(url)?;
        let endpoint = format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().ok_or("the S3 URL has no host")?,
            parsed.port_or_known_default().unwrap_or(9000)
        );
        let bucket = format!("im-bench-{}-{}", std::process::id(), now_ms());
        Ok(vec![
            ("IM_BUSINESS__MEDIA_S3__ENDPOINT", endpoint),
            ("IM_BUSINESS__MEDIA_S3__BUCKET", bucket),
            (
                "IM_BUSINESS__MEDIA_S3__ACCESS_KEY",
                parsed.username().into(),
            ),
            (
                "IM_BUSINESS__MEDIA_S3__SECRET_KEY",
                parsed.password().unwrap_or_default().into(),
            ),
        ])
    }
}

/// The limits a load generator would hit otherwise (they are per user and per minute).
fn media_env(uploads: usize) -> Vec<(&'static str, String)> {
    let many = (uploads * 4).max(1000).to_string();
    vec![
        ("IM_BUSINESS__MEDIA__CREATES_PER_MINUTE", many.clone()),
        ("IM_BUSINESS__MEDIA__CREATE_BURST", many.clone()),
        ("IM_BUSINESS__MEDIA__PENDING_UPLOADS_PER_USER", many),
        (
            "IM_BUSINESS__MEDIA__STORED_BYTES_PER_USER",
            (1u64 << 40).to_string(),
        ),
        (
            "IM_BUSINESS__MEDIA__WINDOW_BYTES_PER_USER",
            (1u64 << 40).to_string(),
        ),
    ]
}

/// PUTs `bytes` as the signed part of `upload` says.
async fn put(http: &reqwest::Client, upload: &Value, bytes: Vec<u8>) -> Result<()> {
    let part = &upload["parts"][0];
    let url = part["url"].as_str().ok_or("the upload has no signed URL")?;
    let mut request = http.put(url);
    for h in part["headers"].as_array().into_iter().flatten() {
        request = request.header(
            h["name"].as_str().unwrap_or_default(),
            h["value"].as_str().unwrap_or_default(),
        );
    }
    let response = request.body(bytes).send().await?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(format!(
            "PUT: {status} {}",
            response.text().await.unwrap_or_default()
        )
        .into());
    }
    Ok(())
}

/// Creates an upload of `size` bytes for one of the users.
async fn create(server: &Server, user: &str, size: usize) -> Result<Value> {
    server
        .api()
        .post(
            "/v1/media/uploads",
            json!({"user_id": user, "kind": "image", "mime_type": "image/png", "size_bytes": size}),
        )
        .await
}

/// One store: the uploads, then the raw PUTs.
async fn measure(
    ctx: &Ctx,
    store: &Store,
    uploads: usize,
    size: usize,
    at_once: usize,
) -> Result<(Value, Vec<Row>)> {
    let mut env = media_env(uploads);
    env.extend(store.env()?);
    let server = Arc::new(Server::start(&ctx.server_bin, &env).await?);
    let users: Vec<String> = (0..at_once).map(|n| format!("m{n}")).collect();
    server.import_users(&users).await?;
    let http = reqwest::Client::new();

    let (srv, client, users_of) = (server.clone(), http.clone(), users.clone());
    let done = open_many(
        &format!("media uploads ({})", store.name()),
        uploads,
        at_once,
        move |n| {
            let (server, http, user) = (srv.clone(), client.clone(), users_of[n % at_once].clone());
            async move {
                let upload = create(&server, &user, size).await?;
                put(&http, &upload, png_of(size, n)).await?;
                let id = upload["media"]["media_id"]
                    .as_str()
                    .ok_or("the upload has no media id")?;
                let media = server
                    .api()
                    .post(&format!("/v1/media/{id}/complete"), json!({}))
                    .await?;
                if media["state"] != "ready" {
                    return Err(format!("completed as {media}").into());
                }
                Ok(())
            }
        },
    )
    .await;
    if let Some(error) = &done.error {
        return Err(format!("uploads: {error}").into());
    }

    // The baseline's uploads are created first, so only their PUTs are timed.
    let mut pending = Vec::with_capacity(uploads);
    for n in 0..uploads {
        pending.push(create(&server, &users[n % at_once], size).await?);
    }
    let pending = Arc::new(pending);
    let client = http.clone();
    let raw = open_many(
        &format!("raw PUTs ({})", store.name()),
        uploads,
        at_once,
        move |n| {
            let (pending, http) = (pending.clone(), client.clone());
            // Other bytes than the uploads', the same size.
            async move { put(&http, &pending[n], png_of(size, uploads + n)).await }
        },
    )
    .await;
    if let Some(error) = &raw.error {
        return Err(format!("raw PUTs: {error}").into());
    }

    let (thumbnails, thumbnail_row) = thumbnails(
        &server,
        &http,
        &users,
        uploads.min(THUMBNAIL_UPLOADS),
        size,
        at_once,
    )
    .await?;
    let rate = done.held.len() as f64 / done.elapsed.as_secs_f64();
    let raw_rate = raw.held.len() as f64 / raw.elapsed.as_secs_f64();
    let mib = size as f64 / (1024.0 * 1024.0);
    let json = json!({
        "uploads": done.held.len(),
        "size_bytes": size,
        "at_once": at_once,
        "seconds": done.elapsed.as_secs_f64(),
        "uploads_per_sec": rate,
        "mib_per_sec": rate * mib,
        "upload_latency": quantiles(&done.latency),
        "raw_put_baseline": {
            "puts": raw.held.len(),
            "seconds": raw.elapsed.as_secs_f64(),
            "puts_per_sec": raw_rate,
            "mib_per_sec": raw_rate * mib,
            "put_latency": quantiles(&raw.latency),
        },
        "thumbnails": thumbnails,
    });
    let row = Row::new(
        format!(
            "media ({}): {} uploads/s, create+PUT+complete ({at_once} at once)",
            store.name(),
            human_size(size)
        ),
        format!(
            "{}/s, {:.0} MiB/s (p99 {})",
            human_count(rate),
            rate * mib,
            human_us(done.latency.value_at_quantile(0.99))
        ),
        format!(
            "{}/s, {:.0} MiB/s raw PUT to the same store (p99 {})",
            human_count(raw_rate),
            raw_rate * mib,
            human_us(raw.latency.value_at_quantile(0.99))
        ),
        "-",
    );
    Ok((json, vec![row, thumbnail_row.label(store.name())]))
}

/// Photographs completed per store: each one's decode and three thumbnails.
const THUMBNAIL_UPLOADS: usize = 50;

/// What [`thumbnails`] makes a row of, once the store is named.
struct ThumbnailRow {
    size: usize,
    count: usize,
    complete: Histogram<u64>,
    decode: Histogram<u64>,
}

impl ThumbnailRow {
    fn label(self, store: &str) -> Row {
        let p50_p99 = |h: &Histogram<u64>| {
            (
                human_us(h.value_at_quantile(0.5)),
                human_us(h.value_at_quantile(0.99)),
            )
        };
        let (complete, decode) = (p50_p99(&self.complete), p50_p99(&self.decode));
        Row::new(
            format!(
                "media ({store}): complete-to-thumbnail of {} photos ({} PNG)",
                self.count,
                human_size(self.size)
            ),
            format!("p50 {}, p99 {}", complete.0, complete.1),
            format!(
                "p50 {}, p99 {} decoding alone, in process",
                decode.0, decode.1
            ),
            "-",
        )
    }
}

/// `count` photographs uploaded, then completed `at_once` at a time, each complete timed: it
/// answers once the thumbnails are made. Beside it, the same PNGs decoded in this process.
async fn thumbnails(
    server: &Arc<Server>,
    http: &reqwest::Client,
    users: &[String],
    count: usize,
    size: usize,
    at_once: usize,
) -> Result<(Value, ThumbnailRow)> {
    let photos: Vec<Vec<u8>> = (0..count).map(|n| photo_of(size, n)).collect();
    let mut ids = Vec::with_capacity(count);
    for (n, photo) in photos.iter().enumerate() {
        let upload = create(server, &users[n % users.len()], photo.len()).await?;
        put(http, &upload, photo.clone()).await?;
        let id = upload["media"]["media_id"]
            .as_str()
            .ok_or("the upload has no media id")?;
        ids.push(id.to_owned());
    }
    let ids = Arc::new(ids);
    let srv = server.clone();
    let done = open_many("photo completes", count, at_once, move |n| {
        let (server, ids) = (srv.clone(), ids.clone());
        async move {
            let media = server
                .api()
                .post(&format!("/v1/media/{}/complete", ids[n]), json!({}))
                .await?;
            let variants = media["variants"].as_array().map_or(0, Vec::len);
            if media["state"] != "ready" || variants == 0 {
                return Err(format!("completed without thumbnails: {media}").into());
            }
            Ok(())
        }
    })
    .await;
    if let Some(error) = &done.error {
        return Err(format!("photo completes: {error}").into());
    }
    let mut decode = Histogram::<u64>::new(3)?;
    for photo in &photos {
        let started = std::time::Instant::now();
        image::load_from_memory(photo)?;
        decode.record(started.elapsed().as_micros() as u64)?;
    }
    let json = json!({
        "photos": done.held.len(),
        "png_bytes": photos.first().map_or(0, Vec::len),
        "at_once": at_once,
        "complete_to_thumbnail": quantiles(&done.latency),
        "decode_in_process_baseline": quantiles(&decode),
    });
    let row = ThumbnailRow {
        size: photos.first().map_or(size, Vec::len),
        count: done.held.len(),
        complete: done.latency,
        decode,
    };
    Ok((json, row))
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Scenario `media`: `uploads` uploads of `size` bytes, `at_once` at a time, on each
/// configured store, beside the raw PUTs of the same bytes to the same store.
pub(crate) async fn media(
    ctx: &Ctx,
    uploads: usize,
    size: usize,
    at_once: usize,
) -> Result<Outcome> {
    eprintln!("media: {uploads} uploads of {size} bytes, {at_once} at once");
    let mut json = serde_json::Map::new();
    let mut rows = Vec::new();
    for store in Store::configured() {
        let (figures, store_rows) = measure(ctx, &store, uploads, size, at_once).await?;
        json.insert(store.key().into(), figures);
        rows.extend(store_rows);
    }
    Ok(Outcome {
        name: "media",
        json: json.into(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_pngs_of_their_size_and_differ() {
        let (a, b) = (png_of(1000, 1), png_of(1000, 2));
        assert_eq!((a.len(), b.len()), (1000, 1000));
        assert!(a.starts_with(b"\x89PNG") && b.starts_with(b"\x89PNG"));
        assert_ne!(a, b);
    }

    #[test]
    fn photos_are_pngs_of_about_their_size_that_decode_and_differ() {
        let (a, b) = (photo_of(30_000, 1), photo_of(30_000, 2));
        assert!((29_000..33_000).contains(&a.len()), "{}", a.len());
        assert_ne!(a, b);
        let decoded = image::load_from_memory(&a).unwrap();
        assert_eq!(decoded.width(), 100);
    }
}
