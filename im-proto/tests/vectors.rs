//! Golden wire vectors: `conformance/vectors/` holds, for every frame variant, the frame's fields
//! (canonical proto3 JSON) and its exact bytes, plus malformed inputs with the error a receiver
//! must produce. This test checks every file the way any implementation must (JSON -> bytes,
//! bytes -> frame -> bytes, frame -> JSON), checks that every variant has a file, and checks
//! that the files are exactly what the cases below produce.
//!
//! After an additive protocol change, regenerate with
//! `IM_BLESS=1 cargo test -p im-proto --test vectors`; a changed byte in an existing case is a
//! breaking change.

mod cases;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use im_proto::{
    FILE_DESCRIPTOR_SET, FrameCodec,
    codec::Frame,
    error::ERROR_CODES,
    v1::{self, ErrorCode},
    version,
};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FrameFile {
    message: String,
    variant: String,
    cases: Vec<FrameCase>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FrameCase {
    name: String,
    description: String,
    fields: Value,
    hex: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct MalformedFile {
    cases: Vec<MalformedCase>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct MalformedCase {
    name: String,
    description: String,
    message: String,
    max_frame_bytes: usize,
    hex: String,
    error: ExpectedError,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ExpectedError {
    code: i32,
    name: String,
    /// The request id the error answer carries (0: the frame could not be attributed).
    request_id: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ErrorCodesFile {
    codes: Vec<ErrorCodeRow>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ErrorCodeRow {
    code: i32,
    name: String,
    retryable: bool,
    meaning: String,
}

const CLIENT_FRAME: &str = "im.v1.ClientFrame";
const SERVER_FRAME: &str = "im.v1.ServerFrame";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/vectors")
}

fn blessing() -> bool {
    std::env::var_os("IM_BLESS").is_some()
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the descriptor set"))
}

/// The canonical proto3 JSON of a message: lowerCamelCase names, 64-bit integers as strings,
/// enums by name, defaults omitted.
fn to_json(message: &DynamicMessage) -> Value {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .expect("serializes")
}

/// The name of the `body` oneof variant a frame carries.
fn variant_of(message: &DynamicMessage) -> String {
    let body = message
        .descriptor()
        .oneofs()
        .find(|o| o.name() == "body")
        .expect("frames have a body");
    let mut set = body
        .fields()
        .filter(|f| message.has_field(f))
        .map(|f| f.name().to_owned());
    let variant = set.next().expect("a vector frame has a body");
    assert!(set.next().is_none());
    variant
}

fn body_variants(message: &str) -> BTreeSet<String> {
    let desc = descriptor(message);
    let body = desc
        .oneofs()
        .find(|o| o.name() == "body")
        .expect("frames have a body");
    body.fields().map(|f| f.name().to_owned()).collect()
}

fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("serializes") + "\n"
}

/// Groups the cases of one direction into one file per variant.
fn frame_files<F: Message>(message: &str, cases: Vec<cases::Case<F>>) -> Vec<(String, FrameFile)> {
    let desc = descriptor(message);
    let mut files: Vec<(String, FrameFile)> = Vec::new();
    for case in cases {
        let bytes = case.frame.encode_to_vec();
        let dynamic = DynamicMessage::decode(desc.clone(), bytes.as_slice()).expect("decodes");
        let variant = variant_of(&dynamic);
        let entry = FrameCase {
            name: case.name.into(),
            description: case.description.into(),
            fields: to_json(&dynamic),
            hex: hex::encode(&bytes),
        };
        match files.iter_mut().find(|(v, _)| *v == variant) {
            Some((_, file)) => file.cases.push(entry),
            None => files.push((
                variant.clone(),
                FrameFile {
                    message: message.into(),
                    variant,
                    cases: vec![entry],
                },
            )),
        }
    }
    files
}

fn malformed_file() -> MalformedFile {
    let cases = cases::malformed_cases()
        .into_iter()
        .map(|c| MalformedCase {
            name: c.name.into(),
            description: c.description.into(),
            message: c.message.into(),
            max_frame_bytes: c.max_frame_bytes,
            hex: hex::encode(&c.bytes),
            error: ExpectedError {
                code: c.error as i32,
                name: c.error.name().into(),
                request_id: c.request_id,
            },
        })
        .collect();
    MalformedFile { cases }
}

fn error_codes_file() -> ErrorCodesFile {
    let codes = ERROR_CODES
        .iter()
        .map(|info| ErrorCodeRow {
            code: info.code as i32,
            name: info.name.into(),
            retryable: info.retryable,
            meaning: info.meaning.into(),
        })
        .collect();
    ErrorCodesFile { codes }
}

/// Every file the cases produce, by path relative to the vectors directory.
fn expected_files() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for (dir, files) in [
        ("client", frame_files(CLIENT_FRAME, cases::client_cases())),
        ("server", frame_files(SERVER_FRAME, cases::server_cases())),
    ] {
        for (variant, file) in files {
            out.push((
                Path::new(dir).join(format!("{variant}.json")),
                pretty(&file),
            ));
        }
    }
    out.push(("malformed.json".into(), pretty(&malformed_file())));
    out.push(("error_codes.json".into(), pretty(&error_codes_file())));
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect()
}

/// Writes the vector files (each by an atomic rename, since other tests read them meanwhile)
/// and removes stale ones.
fn bless(dir: &Path, expected: &[(PathBuf, String)]) {
    for (path, text) in expected {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("in a dir")).expect("creates vector dirs");
        let temporary = path.with_extension("json.tmp");
        fs::write(&temporary, text).expect("writes vector");
        fs::rename(&temporary, &path).expect("renames vector");
    }
    for sub in ["client", "server"] {
        for name in json_files_in(&dir.join(sub)) {
            let relative = Path::new(sub).join(&name);
            if !expected.iter().any(|(p, _)| *p == relative) {
                fs::remove_file(dir.join(relative)).expect("removes stale vector");
            }
        }
    }
}

/// Blessing adds cases; it never changes the bytes of a case that exists, since those bytes
/// are the protocol. `IM_BLESS=breaking` overrides this for a new protocol version.
fn refuse_changed_bytes(dir: &Path) {
    if std::env::var("IM_BLESS").as_deref() == Ok("breaking") {
        return;
    }
    let all_cases: Vec<(&str, FrameCase)> = [
        ("client", frame_files(CLIENT_FRAME, cases::client_cases())),
        ("server", frame_files(SERVER_FRAME, cases::server_cases())),
    ]
    .into_iter()
    .flat_map(|(sub, files)| {
        files
            .into_iter()
            .flat_map(move |(_, f)| f.cases.into_iter().map(move |c| (sub, c)))
    })
    .collect();
    for sub in ["client", "server"] {
        for name in json_files_in(&dir.join(sub)) {
            let file: FrameFile =
                serde_json::from_str(&read(&dir.join(sub).join(name))).expect("vector file parses");
            for case in file.cases {
                let now = all_cases
                    .iter()
                    .find(|(s, c)| *s == sub && c.name == case.name);
                assert!(
                    now.is_none_or(|(_, c)| c.hex == case.hex),
                    "the bytes of the existing vector {sub}/{} would change: a breaking change \
                     (IM_BLESS=breaking to do it anyway)",
                    case.name
                );
            }
        }
    }
}

#[test]
fn vector_files_are_what_the_cases_produce() {
    let dir = vectors_dir();
    let expected = expected_files();
    if blessing() {
        refuse_changed_bytes(&dir);
        bless(&dir, &expected);
    }
    for (path, text) in &expected {
        assert!(
            read(&dir.join(path)) == *text,
            "{} differs from the cases; an additive protocol change is blessed with \
             IM_BLESS=1 cargo test -p im-proto --test vectors",
            path.display()
        );
    }
    for sub in ["client", "server"] {
        let on_disk = json_files_in(&dir.join(sub));
        let wanted: BTreeSet<String> = expected
            .iter()
            .filter_map(|(p, _)| p.strip_prefix(sub).ok().map(|f| f.display().to_string()))
            .collect();
        assert_eq!(on_disk, wanted, "stale or missing files in {sub}/");
    }
}

#[test]
fn every_frame_variant_has_a_vector_file() {
    let dir = vectors_dir();
    for (sub, message) in [("client", CLIENT_FRAME), ("server", SERVER_FRAME)] {
        let files: BTreeSet<String> = json_files_in(&dir.join(sub))
            .iter()
            .map(|f| f.trim_end_matches(".json").to_owned())
            .collect();
        assert_eq!(
            files,
            body_variants(message),
            "{sub}/ must hold one file per {message} variant"
        );
    }
}

/// What every implementation does with a frame vector.
fn check_frame_file<F: Frame + PartialEq + std::fmt::Debug>(
    path: &Path,
    decode: impl Fn(&[u8]) -> Result<F, im_proto::FrameError>,
) -> usize {
    let file: FrameFile = serde_json::from_str(&read(path)).expect("vector file parses");
    let desc = descriptor(&file.message);
    assert!(!file.cases.is_empty(), "{}: no cases", path.display());
    for case in &file.cases {
        let at = format!("{} / {}", path.display(), case.name);
        let bytes = hex::decode(&case.hex).expect("hex");

        // Fields -> bytes, through a reflection encoder that knows only the descriptors.
        let from_json = DynamicMessage::deserialize(desc.clone(), case.fields.clone())
            .unwrap_or_else(|e| panic!("{at}: fields do not parse: {e}"));
        assert_eq!(
            hex::encode(from_json.encode_to_vec()),
            case.hex,
            "{at}: JSON -> bytes"
        );

        // Bytes -> typed frame -> bytes, through the generated code and the codec.
        let typed = decode(&bytes).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(
            hex::encode(typed.encode_to_vec()),
            case.hex,
            "{at}: bytes -> frame -> bytes"
        );

        // Typed frame -> JSON.
        let dynamic = DynamicMessage::decode(desc.clone(), typed.encode_to_vec().as_slice())
            .expect("decodes");
        assert_eq!(to_json(&dynamic), case.fields, "{at}: bytes -> JSON");
        assert_eq!(
            variant_of(&dynamic),
            file.variant,
            "{at}: the case's body is the file's variant"
        );
    }
    file.cases.len()
}

#[test]
fn frame_vectors_decode_and_reencode_byte_for_byte() {
    let dir = vectors_dir();
    let codec = FrameCodec::default();
    let mut checked = 0;
    for name in json_files_in(&dir.join("client")) {
        checked += check_frame_file(&dir.join("client").join(name), |b| codec.decode_client(b));
    }
    for name in json_files_in(&dir.join("server")) {
        checked += check_frame_file(&dir.join("server").join(name), |b| codec.decode_server(b));
    }
    assert!(checked >= body_variants(CLIENT_FRAME).len() + body_variants(SERVER_FRAME).len());
}

/// What a receiver makes of bytes: the first error it must report, if any, and the request id
/// its answer carries.
fn receive(message: &str, max_frame_bytes: usize, bytes: &[u8]) -> Result<(), (ErrorCode, u64)> {
    let codec = FrameCodec::new(max_frame_bytes);
    let framing = |e: im_proto::FrameError| (e.code(), e.request_id());
    match message {
        CLIENT_FRAME => {
            let frame = codec.decode_client(bytes).map_err(framing)?;
            if let Some(v1::client_frame::Body::Hello(hello)) = &frame.body {
                version::negotiate_hello(hello).map_err(|e| (e.code(), frame.request_id))?;
            }
            Ok(())
        }
        SERVER_FRAME => codec.decode_server(bytes).map(drop).map_err(framing),
        other => panic!("unknown frame type {other}"),
    }
}

#[test]
fn malformed_vectors_are_rejected_with_their_codes() {
    let path = vectors_dir().join("malformed.json");
    let file: MalformedFile = serde_json::from_str(&read(&path)).expect("parses");
    assert!(file.cases.len() >= 8);
    let mut seen = BTreeSet::new();
    for case in &file.cases {
        let expected = ErrorCode::try_from(case.error.code).expect("a known code");
        assert_eq!(
            expected.name(),
            case.error.name,
            "{}: code and name agree",
            case.name
        );
        let bytes = hex::decode(&case.hex).expect("hex");
        assert_eq!(
            receive(&case.message, case.max_frame_bytes, &bytes),
            Err((expected, case.error.request_id)),
            "{}",
            case.name
        );
        seen.insert(case.error.name.clone());
    }
    for required in [
        "MALFORMED_FRAME",
        "FRAME_TOO_LARGE",
        "UNSUPPORTED_FRAME",
        "UNSUPPORTED_VERSION",
    ] {
        assert!(
            seen.contains(required),
            "no malformed vector produces {required}"
        );
    }
}

#[test]
fn error_codes_file_matches_the_table() {
    let file: ErrorCodesFile =
        serde_json::from_str(&read(&vectors_dir().join("error_codes.json"))).expect("parses");
    assert_eq!(file, error_codes_file());
}
