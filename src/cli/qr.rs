//! Tickets as QR codes that a phone can scan off any terminal.
//!
//! A terminal draws characters in its foreground colour on its background colour, and
//! which of the two is light depends on the user's theme: a code drawn as "dark module =
//! `█`" is inverted on a dark terminal, and most scanners then see nothing. So every cell
//! sets both colours itself (black on white, ANSI 30/40 and 97/107), with the four-module
//! light quiet zone the standard asks for, and the theme no longer matters.
//!
//! The code holds the ticket in uppercase: base32 in uppercase fits QR's alphanumeric mode
//! (5.5 bits a character instead of 8), which makes a smaller, easier-to-scan code, and
//! tickets are read in either case.

use anyhow::{Context, Result};
use qrcode::{Color, EcLevel, QrCode};

/// Light modules the standard asks for around the code.
const QUIET_ZONE: usize = 4;

/// The QR code of `ticket`, as terminal text (two modules per character cell, `▀` with
/// the top module as foreground and the bottom one as background).
pub fn render(ticket: &str) -> Result<String> {
    let code = encode(ticket)?;
    let width = code.width();
    let modules = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    let dark = |x: usize, y: usize| {
        let inside = |v: usize| (QUIET_ZONE..QUIET_ZONE + width).contains(&v);
        inside(x) && inside(y) && modules[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Dark
    };
    let mut out = String::new();
    for y in (0..size).step_by(2) {
        for x in 0..size {
            let fg = if dark(x, y) { 30 } else { 97 };
            let bg = if dark(x, y + 1) { 40 } else { 107 };
            out.push_str(&format!("\x1b[{fg};{bg}m\u{2580}"));
        }
        out.push_str("\x1b[0m\n");
    }
    Ok(out)
}

/// The code itself: the uppercase ticket, medium error correction.
fn encode(ticket: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(ticket.to_ascii_uppercase().as_bytes(), EcLevel::M)
        .context("the ticket does not fit in a QR code (fewer relays make it shorter)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a terminal with the given default colours shows `text`: one row of pixels per
    /// half cell, `true` for light. Understands the SGR codes `render` writes (and none,
    /// for the plain renderings a terminal shows in its own colours).
    fn screen(text: &str, default_fg_light: bool) -> Vec<Vec<bool>> {
        let default_bg_light = !default_fg_light;
        let mut rows = Vec::new();
        for line in text.lines() {
            let (mut fg, mut bg) = (default_fg_light, default_bg_light);
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    let mut codes = String::new();
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                        codes.push(c);
                    }
                    for code in codes.trim_start_matches('[').split(';') {
                        match code {
                            "0" | "" => (fg, bg) = (default_fg_light, default_bg_light),
                            "30" => fg = false,
                            "97" => fg = true,
                            "40" => bg = false,
                            "107" => bg = true,
                            other => panic!("unexpected SGR code {other}"),
                        }
                    }
                    continue;
                }
                let (t, b) = match c {
                    '\u{2580}' => (fg, bg),
                    '\u{2584}' => (bg, fg),
                    '\u{2588}' => (fg, fg),
                    ' ' => (bg, bg),
                    other => panic!("unexpected character {other:?}"),
                };
                top.push(t);
                bottom.push(b);
            }
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    /// Decodes what a camera would see of `pixels` (each module 4×4 image pixels, with a
    /// margin of the terminal's background around the whole screen).
    fn scan(pixels: &[Vec<bool>], background_light: bool) -> Option<String> {
        const SCALE: usize = 4;
        const MARGIN: usize = 8;
        let height = pixels.len();
        let width = pixels.iter().map(Vec::len).max()?;
        let (w, h) = ((width + 2 * MARGIN) * SCALE, (height + 2 * MARGIN) * SCALE);
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            let (mx, my) = ((x / SCALE).checked_sub(MARGIN), (y / SCALE).checked_sub(MARGIN));
            let light = match (mx, my) {
                (Some(mx), Some(my)) => pixels.get(my).and_then(|row| row.get(mx)).copied().unwrap_or(background_light),
                _ => background_light,
            };
            if light { 255 } else { 0 }
        });
        let grids = image.detect_grids();
        grids.first().and_then(|grid| grid.decode().ok()).map(|(_, content)| content)
    }

    fn sample_ticket() -> String {
        let relays = (0..2)
            .map(|i| ferry_proto::RelayAddr {
                addr: format!("relay{i}.example.org:4433"),
                trust: ferry_proto::RelayTrust::Pin(ferry_proto::CertPin([i; 32])),
            })
            .collect();
        let ticket =
            ferry_proto::Ticket::new(ferry_proto::PublicKey([7; 32]), ferry_proto::TicketSecret([9; 32]), relays);
        ticket.encode().unwrap()
    }

    #[test]
    fn the_code_scans_on_light_and_dark_terminals_and_reads_as_the_ticket() {
        let ticket = sample_ticket();
        let text = render(&ticket).unwrap();
        for dark_theme in [true, false] {
            let pixels = screen(&text, dark_theme);
            let content =
                scan(&pixels, !dark_theme).unwrap_or_else(|| panic!("no QR code decoded (dark theme: {dark_theme})"));
            assert_eq!(content, ticket.to_ascii_uppercase());
            assert_eq!(ferry_proto::Ticket::decode(&content).unwrap(), ferry_proto::Ticket::decode(&ticket).unwrap());
        }
    }

    #[test]
    fn the_old_rendering_was_inverted_on_a_dark_terminal() {
        // What `ferry host ticket --qr` drew before: `█` for dark modules, in the
        // terminal's own colours. Light themes scanned; dark ones did not.
        let ticket = sample_ticket();
        let code = QrCode::new(ticket.as_bytes()).unwrap();
        let old = code.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build();
        assert!(scan(&screen(&old, false), true).is_some(), "the old code scans on a light theme");
        assert!(scan(&screen(&old, true), false).is_none(), "the old code must not scan inverted");
    }

    #[test]
    fn uppercase_uses_alphanumeric_mode_and_makes_a_smaller_code() {
        let ticket = sample_ticket();
        let upper = encode(&ticket).unwrap();
        let lower = QrCode::with_error_correction_level(ticket.as_bytes(), EcLevel::M).unwrap();
        assert!(upper.width() < lower.width(), "{} modules upper, {} lower", upper.width(), lower.width());
    }
}
