//! QR codes as SVG, for a page to show the link to a send.

use qrcode::{Color, EcLevel, QrCode};
use wasm_bindgen::prelude::*;

use crate::js;

/// Light modules around the code on every side (scanners need a quiet zone).
const QUIET: usize = 4;

/// `text` as an SVG image of its QR code (error correction level M): one
/// module per user unit, a quiet zone of four modules, dark modules drawn
/// as one path with crisp edges, scaled to whatever size it is shown at.
pub fn svg(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET;
    let mut path = String::new();
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] != Color::Dark {
                x += 1;
                continue;
            }
            // A run of dark modules on this row is one rectangle.
            let start = x;
            while x < width && row[x] == Color::Dark {
                x += 1;
            }
            path.push_str(&format!(
                "M{} {}h{}v1h-{}z",
                start + QUIET,
                y + QUIET,
                x - start,
                x - start
            ));
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}

/// `text` as an SVG string of its QR code (level M, a quiet zone of four
/// modules, crisp edges, a viewBox of the modules); fails with an `Error`
/// whose `code` is `TooLong` when the text does not fit a QR code.
#[wasm_bindgen(js_name = qrSvg)]
pub fn qr_svg(text: &str) -> Result<String, JsValue> {
    svg(text).map_err(|e| js::error("TooLong", &format!("no QR code of this text: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_the_code_with_a_quiet_zone() {
        let text = "http://127.0.0.1:7878/#7-amber-falcon";
        let image = svg(text).expect("a short text fits");
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
            .expect("a short text fits");
        let size = code.width() + 2 * QUIET;
        assert!(image.starts_with("<svg "));
        assert!(image.contains(&format!("viewBox=\"0 0 {size} {size}\"")));
        assert!(image.contains("shape-rendering=\"crispEdges\""));
        // Every dark module is drawn, inside the quiet zone: count the area.
        let dark = code
            .to_colors()
            .iter()
            .filter(|c| **c == Color::Dark)
            .count();
        let mut area = 0;
        let mut min = usize::MAX;
        let mut max = 0;
        let d = image.split("d=\"").nth(1).and_then(|r| r.split('"').next());
        for rect in d.expect("a path").split('z').filter(|r| !r.is_empty()) {
            let nums: Vec<usize> = rect
                .split(|c: char| !c.is_ascii_digit())
                .filter(|n| !n.is_empty())
                .map(|n| n.parse().expect("a number"))
                .collect();
            let (x, y, run) = (nums[0], nums[1], nums[2]);
            area += run;
            min = min.min(x).min(y);
            max = max.max(x + run).max(y + 1);
        }
        assert_eq!(area, dark);
        assert_eq!(min, QUIET, "the finder patterns touch the quiet zone");
        assert_eq!(max, size - QUIET);
        assert!(svg(&"x".repeat(8000)).is_err(), "too long for any QR code");
    }
}
