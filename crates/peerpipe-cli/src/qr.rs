//! A QR code drawn in a terminal with Unicode half blocks: two rows of
//! modules per line of text.

use anyhow::{Context as _, Result};
use qrcode::{Color, EcLevel, QrCode};

/// Light modules around the code (scanners need a quiet zone).
const QUIET: usize = 2;

/// `text` as a QR code (error correction level L: the code is read from a
/// screen), one string per terminal line. Light modules are drawn in the
/// terminal's foreground colour, so that on the usual dark background the
/// code shows dark on light, as scanners expect.
pub fn render(text: &str) -> Result<Vec<String>> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L)
        .context("making the QR code")?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET;
    // Light unless inside the code and dark there.
    let light = |x: usize, y: usize| {
        !(x >= QUIET
            && y >= QUIET
            && x < QUIET + width
            && y < QUIET + width
            && colors[(y - QUIET) * width + (x - QUIET)] == Color::Dark)
    };
    let mut lines = Vec::with_capacity(size.div_ceil(2));
    for y in (0..size).step_by(2) {
        let line = (0..size)
            .map(|x| {
                let top = light(x, y);
                let bottom = y + 1 < size && light(x, y + 1);
                match (top, bottom) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                }
            })
            .collect();
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_square_with_a_quiet_zone() {
        let lines = render("peerpipe receive 7-amber-falcon").unwrap();
        let width = lines[0].chars().count();
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // The top quiet rows are all light.
        assert!(lines[0].chars().all(|c| c == '█'));
    }
}
