//! What processing learns of an image, from its bytes alone: its dimensions as shown (EXIF
//! orientation applied), whether it is animated, a ThumbHash placeholder, and thumbnails.
//!
//! Decoding is bounded before a pixel is allocated: the dimensions come from the header and
//! are checked against [`ImageLimits`], and the decoder itself is held to the same limits and
//! an allocation cap, so a small file that declares a huge image (a decompression bomb) costs
//! nothing. Thumbnails are encoded afresh, so no EXIF (location, camera) reaches them;
//! images with transparency keep it (PNG), others become JPEG.

use std::io::Cursor;

use image::{
    AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, ImageReader, codecs,
    imageops::FilterType,
};
use serde::{Deserialize, Serialize};

/// Bounds on the images processing decodes (`[business.media]` `max_image_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// The largest width or height.
    pub max_dimension: u32,
    /// The most pixels (width times height).
    pub max_pixels: u64,
    /// The most memory the decoder may allocate, in bytes.
    pub max_decode_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_dimension: 16_384,
            max_pixels: 50_000_000,
            max_decode_bytes: 512 << 20,
        }
    }
}

/// The thumbnails made of an image: (variant name, longest side). A size the image does not
/// exceed is left out; an image smaller than all of them gets none.
pub const THUMBNAILS: [(&str, u32); 3] =
    [("thumb_96", 96), ("thumb_320", 320), ("thumb_1024", 1024)];

/// A rendition of media kept beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// `thumb_96`, `thumb_320`, `thumb_1024`.
    pub name: String,
    /// Its type.
    pub mime_type: String,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// What processing learned, kept with the media (as JSON in its `facts` column).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaFacts {
    /// Width as shown.
    pub width: u32,
    /// Height as shown.
    pub height: u32,
    /// Whether the image has more than one frame.
    pub animated: bool,
    /// A ThumbHash of the image (base64 in the JSON).
    #[serde(with = "base64_bytes")]
    pub thumbhash: Vec<u8>,
    /// The renditions kept.
    pub variants: Vec<Variant>,
    /// Why there are no variants, when there are none.
    pub no_variants: String,
    /// What the content scanners said, in the order they were asked.
    pub scans: Vec<super::scan::ScanRecord>,
}

impl MediaFacts {
    /// The facts stored as `json` (none for an empty or unreadable column).
    pub fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// For the `facts` column.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Facts with no variants, saying why.
    pub fn none(why: impl Into<String>) -> Self {
        Self {
            no_variants: why.into(),
            ..Self::default()
        }
    }
}

mod base64_bytes {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// An encoded thumbnail, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// What it is.
    pub variant: Variant,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Why an image was not processed; the media is served without variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotProcessed {
    /// Larger than the limits allow (the image is not decoded).
    #[error("too large to process: {0}")]
    TooLarge(String),
    /// Not an image this server decodes, or corrupt.
    #[error("not decoded: {0}")]
    Undecodable(String),
}

fn undecodable(error: impl std::fmt::Display) -> NotProcessed {
    NotProcessed::Undecodable(error.to_string())
}

/// Decodes `bytes` within `limits` and makes its facts and thumbnails. CPU-bound: run it on a
/// blocking thread.
pub fn analyze_image(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<(MediaFacts, Vec<Rendition>), NotProcessed> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(undecodable)?;
    let format = reader
        .format()
        .ok_or_else(|| NotProcessed::Undecodable("unknown image format".into()))?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_dimension);
    decoder_limits.max_image_height = Some(limits.max_dimension);
    decoder_limits.max_alloc = Some(limits.max_decode_bytes);
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(NotProcessed::TooLarge(format!(
            "{width}x{height} is over {} on a side",
            limits.max_dimension
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(NotProcessed::TooLarge(format!(
            "{width}x{height} is over {} pixels",
            limits.max_pixels
        )));
    }
    // The decoded buffer, as the header declares it (from_decoder allocates it at once).
    if decoder.total_bytes() > limits.max_decode_bytes {
        return Err(NotProcessed::TooLarge(format!(
            "{} bytes decoded is over {}",
            decoder.total_bytes(),
            limits.max_decode_bytes
        )));
    }
    decoder
        .set_limits(decoder_limits)
        .map_err(|e| NotProcessed::TooLarge(e.to_string()))?;
    let orientation = decoder.orientation().map_err(undecodable)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(limit) => NotProcessed::TooLarge(limit.to_string()),
        other => undecodable(other),
    })?;
    image.apply_orientation(orientation);
    let facts = MediaFacts {
        width: image.width(),
        height: image.height(),
        animated: animated(bytes, format),
        thumbhash: thumbhash_of(&image),
        ..MediaFacts::default()
    };
    let renditions = thumbnails(&image)?;
    let mut facts = facts;
    facts.variants = renditions.iter().map(|r| r.variant.clone()).collect();
    if facts.variants.is_empty() {
        facts.no_variants = "smaller than every thumbnail".into();
    }
    Ok((facts, renditions))
}

/// Whether the image has a second frame (GIF, APNG, animated WebP).
fn animated(bytes: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Gif => codecs::gif::GifDecoder::new(Cursor::new(bytes))
            .map(|d| d.into_frames().take(2).count() > 1)
            .unwrap_or(false),
        ImageFormat::Png => codecs::png::PngDecoder::new(Cursor::new(bytes))
            .and_then(|d| d.is_apng())
            .unwrap_or(false),
        ImageFormat::WebP => codecs::webp::WebPDecoder::new(Cursor::new(bytes))
            .map(|d| d.has_animation())
            .unwrap_or(false),
        _ => false,
    }
}

/// The ThumbHash of the image, computed on a copy at most 100 pixels on a side (its limit).
fn thumbhash_of(image: &DynamicImage) -> Vec<u8> {
    let small = image.thumbnail(100, 100).to_rgba8();
    thumbhash::rgba_to_thumb_hash(
        small.width() as usize,
        small.height() as usize,
        small.as_raw(),
    )
}

fn thumbnails(image: &DynamicImage) -> Result<Vec<Rendition>, NotProcessed> {
    let longest = image.width().max(image.height());
    let alpha = image.color().has_alpha();
    let mut renditions = Vec::new();
    for (name, side) in THUMBNAILS {
        if longest <= side {
            break;
        }
        let thumb = image.resize(side, side, FilterType::Triangle);
        let mut bytes = Vec::new();
        let mime_type = if alpha {
            thumb
                .to_rgba8()
                .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
                .map_err(undecodable)?;
            "image/png"
        } else {
            let encoder = codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80);
            thumb
                .to_rgb8()
                .write_with_encoder(encoder)
                .map_err(undecodable)?;
            "image/jpeg"
        };
        renditions.push(Rendition {
            variant: Variant {
                name: name.to_owned(),
                mime_type: mime_type.to_owned(),
                width: thumb.width(),
                height: thumb.height(),
                size_bytes: bytes.len() as u64,
            },
            bytes,
        });
    }
    Ok(renditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb, Rgba};

    fn png(width: u32, height: u32, alpha: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let image = if alpha {
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(width, height, |x, _| {
                Rgba([255, 0, 0, if x % 2 == 0 { 0 } else { 255 }])
            }))
        } else {
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
                Rgb([(x % 256) as u8, (y % 256) as u8, 128])
            }))
        };
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    /// A JPEG of `width` x `height` whose EXIF says to rotate it a quarter turn clockwise
    /// (orientation 6), as phone cameras write them.
    fn rotated_jpeg(width: u32, height: u32) -> Vec<u8> {
        let mut jpeg = Vec::new();
        let image = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(width, height, Rgb([9, 9, 9])));
        image
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        // A little-endian TIFF with one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
        let tiff: &[u8] = &[
            b'I', b'I', 42, 0, 8, 0, 0, 0, // header, first IFD at 8
            1, 0, // one entry
            0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, // orientation = 6
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(tiff);
        let length = u16::try_from(app1.len() + 2).unwrap().to_be_bytes();
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend_from_slice(&[0xFF, 0xE1, length[0], length[1]]);
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn a_png_with_transparency_gets_png_thumbnails_that_keep_it() {
        let (facts, renditions) =
            analyze_image(&png(400, 200, true), &ImageLimits::default()).unwrap();
        assert_eq!(
            (facts.width, facts.height, facts.animated),
            (400, 200, false)
        );
        assert!(!facts.thumbhash.is_empty());
        let names: Vec<&str> = renditions.iter().map(|r| r.variant.name.as_str()).collect();
        assert_eq!(
            names,
            ["thumb_96", "thumb_320"],
            "none larger than the image"
        );
        let thumb = image::load_from_memory(&renditions[0].bytes).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (96, 48));
        assert!(thumb.color().has_alpha(), "transparency kept");
        assert_eq!(renditions[0].variant.mime_type, "image/png");
        assert_eq!(
            facts.variants[1].size_bytes,
            renditions[1].bytes.len() as u64
        );
    }

    #[test]
    fn an_opaque_image_gets_jpeg_thumbnails() {
        let (_, renditions) =
            analyze_image(&png(2000, 1000, false), &ImageLimits::default()).unwrap();
        assert_eq!(renditions.len(), 3);
        assert!(
            renditions
                .iter()
                .all(|r| r.variant.mime_type == "image/jpeg")
        );
        let large = image::load_from_memory(&renditions[2].bytes).unwrap();
        assert_eq!((large.width(), large.height()), (1024, 512));
    }

    #[test]
    fn exif_orientation_is_applied_and_no_exif_reaches_the_thumbnails() {
        let jpeg = rotated_jpeg(400, 200);
        let (facts, renditions) = analyze_image(&jpeg, &ImageLimits::default()).unwrap();
        assert_eq!((facts.width, facts.height), (200, 400), "shown upright");
        let thumb = &renditions[0];
        assert_eq!((thumb.variant.width, thumb.variant.height), (48, 96));
        assert!(
            !thumb.bytes.windows(4).any(|w| w == b"Exif"),
            "the thumbnail carries no EXIF"
        );
    }

    /// A 1x1 PNG whose header declares `side` x `side` pixels (its checksum fixed, so only
    /// the size is wrong).
    fn declaring(side: u32) -> Vec<u8> {
        let mut bytes = png(1, 1, false);
        bytes[16..20].copy_from_slice(&side.to_be_bytes());
        bytes[20..24].copy_from_slice(&side.to_be_bytes());
        // CRC-32 of the IHDR chunk's type and data (bytes 12..29), stored after them.
        let mut crc = !0_u32;
        for byte in &bytes[12..29] {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
        bytes
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // 100,000 x 100,000 pixels: 40 GB as RGBA, from a file of a few dozen bytes.
        let limits = ImageLimits::default();
        let refused = analyze_image(&declaring(100_000), &limits);
        assert!(
            matches!(refused, Err(NotProcessed::TooLarge(_))),
            "{refused:?}"
        );
        // Within the side limit but over the pixel count.
        let refused = analyze_image(&declaring(10_000), &limits);
        assert!(
            matches!(refused, Err(NotProcessed::TooLarge(_))),
            "{refused:?}"
        );
        // And under a small allocation cap, a real image too large for it.
        let tight = ImageLimits {
            max_decode_bytes: 1 << 16,
            ..limits
        };
        assert!(matches!(
            analyze_image(&png(400, 400, true), &tight),
            Err(NotProcessed::TooLarge(_))
        ));
    }

    #[test]
    fn a_corrupt_image_is_not_decoded() {
        let mut corrupt = png(300, 300, false);
        corrupt.truncate(corrupt.len() / 2);
        assert!(matches!(
            analyze_image(&corrupt, &ImageLimits::default()),
            Err(NotProcessed::Undecodable(_))
        ));
        assert!(matches!(
            analyze_image(b"not an image at all", &ImageLimits::default()),
            Err(NotProcessed::Undecodable(_))
        ));
    }

    #[test]
    fn an_animated_gif_is_flagged() {
        let mut bytes = Vec::new();
        {
            let mut encoder = codecs::gif::GifEncoder::new(&mut bytes);
            let frames = (0..2).map(|i| {
                image::Frame::new(ImageBuffer::from_pixel(
                    120,
                    120,
                    Rgba([i * 100, 0, 0, 255]),
                ))
            });
            encoder.encode_frames(frames).unwrap();
        }
        let (facts, _) = analyze_image(&bytes, &ImageLimits::default()).unwrap();
        assert!(facts.animated);
        let (still, _) = analyze_image(&png(120, 120, false), &ImageLimits::default()).unwrap();
        assert!(!still.animated);
    }

    #[test]
    fn facts_survive_their_column() {
        let (facts, _) = analyze_image(&png(400, 200, true), &ImageLimits::default()).unwrap();
        assert_eq!(MediaFacts::parse(&facts.to_json()), facts);
        assert_eq!(MediaFacts::parse(""), MediaFacts::default());
    }
}
