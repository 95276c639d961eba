//! What the bytes are, whatever the uploader declared: the type sniffed from their magic
//! numbers wins, a kind must match its bytes, and only images, audio and video are served
//! inline (never SVG, HTML or anything else a browser could run as a page).

use im_proto::v1::MediaKind;

/// How many leading bytes the sniffer reads.
pub const SNIFF_BYTES: u64 = 8 << 10;

/// The type of `head` (the object's first bytes) by its magic numbers, if known.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    infer::get(head).map(|t| t.mime_type())
}

/// The type recorded for an object of `kind` declared as `declared` whose first bytes sniff as
/// `sniffed`, or why the bytes are not what the kind says.
pub fn settle(kind: MediaKind, declared: &str, sniffed: Option<&str>) -> Result<String, String> {
    let family = |mime: &str| mime.split('/').next().unwrap_or_default().to_owned();
    let wanted = match kind {
        MediaKind::Image => Some("image"),
        MediaKind::Video => Some("video"),
        MediaKind::Audio => Some("audio"),
        MediaKind::File | MediaKind::Unspecified => None,
    };
    match (wanted, sniffed) {
        // An audio track in a video container (or the reverse) is still playable media.
        (Some(want), Some(found))
            if family(found) == want
                || (want != "image" && ["audio", "video"].contains(&family(found).as_str())) =>
        {
            Ok(found.to_owned())
        }
        (Some(want), Some(found)) => Err(format!("declared {want}; the bytes are {found}")),
        (Some(want), None) => Err(format!(
            "declared {want}; the bytes are of no known {want} type"
        )),
        (None, Some(found)) => Ok(found.to_owned()),
        (None, None) => Ok(declared.to_owned()),
    }
}

/// Whether a browser may show `mime` inline: images (not SVG, which can run script), audio and
/// video. Everything else is served as an attachment.
pub fn inline(mime: &str) -> bool {
    let mime = mime.to_ascii_lowercase();
    (mime.starts_with("image/") && !mime.starts_with("image/svg"))
        || mime.starts_with("audio/")
        || mime.starts_with("video/")
}

/// A `Content-Disposition: attachment` value naming `file_name` (RFC 6266: an ASCII fallback
/// and the UTF-8 name percent-encoded).
pub fn attachment(file_name: &str) -> String {
    let fallback: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A name with nothing printable left (say "\r\n") falls back to a neutral one.
    let fallback = if fallback.chars().all(|c| c == '_' || c == ' ') {
        "download".to_owned()
    } else {
        fallback
    };
    let encoded: String = file_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    /// The 64-byte header of an x86-64 ELF executable.
    const EXE: &[u8; 64] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0\
        \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

    #[test]
    fn the_bytes_win_over_the_declaration() {
        assert_eq!(sniff(PNG), Some("image/png"));
        assert_eq!(
            settle(MediaKind::Image, "image/jpeg", sniff(PNG)),
            Ok("image/png".into())
        );
        let exe = settle(MediaKind::Image, "image/png", sniff(EXE.as_slice())).unwrap_err();
        assert!(exe.contains("declared image"), "{exe}");
        assert!(settle(MediaKind::Image, "image/svg+xml", sniff(b"<svg xmlns=")).is_err());
        assert_eq!(
            settle(MediaKind::File, "image/png", sniff(EXE.as_slice())),
            Ok("application/x-executable".into()),
            "a file keeps what its bytes are"
        );
        assert_eq!(
            settle(MediaKind::File, "text/plain", sniff(b"hello")),
            Ok("text/plain".into())
        );
    }

    #[test]
    fn only_images_audio_and_video_are_served_inline() {
        for mime in ["image/png", "image/webp", "audio/ogg", "video/mp4"] {
            assert!(inline(mime), "{mime}");
        }
        for mime in [
            "image/svg+xml",
            "IMAGE/SVG+XML",
            "text/html",
            "application/xhtml+xml",
            "application/pdf",
            "text/plain",
            "application/x-executable",
        ] {
            assert!(!inline(mime), "{mime}");
        }
    }

    #[test]
    fn attachment_names_cannot_break_the_header() {
        assert_eq!(
            attachment("a\"b.html"),
            "attachment; filename=\"a_b.html\"; filename*=UTF-8''a%22b.html"
        );
        assert_eq!(
            attachment("résumé.pdf"),
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        );
        assert!(attachment("\r\n").starts_with("attachment; filename=\"download\""));
    }
}
