//! Reads back a QR code drawn in a terminal with half-block characters, by handing it to an
//! independent decoder (`zbarimg`, Debian's zbar-tools) as an image.

use crate::error::{Context, Result};
use crate::process::{run, timed};
use std::path::Path;
use std::time::Duration;

/// Pixels per module side in the image given to zbarimg.
const SCALE: usize = 6;

/// Whether the (top, bottom) halves of a cell are drawn (foreground) for `c`.
fn halves(c: char) -> Option<(bool, bool)> {
    match c {
        '█' => Some((true, true)),
        '▀' => Some((true, false)),
        '▄' => Some((false, true)),
        ' ' => Some((false, false)),
        _ => None,
    }
}

/// The first run of lines of `text` made only of half-block characters (and spaces), as
/// rows of modules: two per line, `true` where the terminal draws the glyph.
fn block_rows(text: &str) -> Vec<Vec<bool>> {
    let is_block_line =
        |l: &str| l.chars().any(|c| c != ' ') && l.chars().all(|c| halves(c).is_some());
    let mut rows = Vec::new();
    for line in text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| !is_block_line(l))
        .take_while(|l| is_block_line(l))
    {
        let (top, bottom): (Vec<bool>, Vec<bool>) = line.chars().filter_map(halves).unzip();
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

/// Decodes the QR code drawn in `text` under `dir` (a scratch directory); returns its text.
/// The code is drawn with the glyphs as the light modules (its quiet zone is a frame of
/// full blocks), as on a dark terminal.
pub fn decode_drawn_qr(text: &str, dir: &Path) -> Result<String> {
    let rows = block_rows(text);
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    if rows.len() < 21 || width < 21 {
        crate::bail!("no QR code drawn in:\n{text}");
    }
    // A plain PBM (P1): 1 is black. Drawn glyphs are light; short lines end in light.
    let mut pbm = format!("P1\n{} {}\n", width * SCALE, rows.len() * SCALE);
    for row in &rows {
        let mut line = String::new();
        for x in 0..width {
            let light = row.get(x).copied().unwrap_or(true);
            let bit = if light { "0 " } else { "1 " };
            line.push_str(&bit.repeat(SCALE));
        }
        line.push('\n');
        pbm.push_str(&line.repeat(SCALE));
    }
    let image = dir.join("qr.pbm");
    std::fs::write(&image, pbm).context("writing the QR image")?;
    let out = run(timed(Duration::from_secs(30), "zbarimg")
        .args(["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable"])
        .arg(&image))?;
    if !out.status.success() {
        crate::bail!(
            "zbarimg found no QR code ({}) in:\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}
