//! How `pgdbm inspect` writes things for people: aligned tables, sizes, durations, statements
//! on one line; and how it reads a duration (`--threshold 30s`).

use std::time::Duration;

use crate::output::{HEADING, styled};

/// How a column is aligned.
#[derive(Clone, Copy)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers (and their heading).
    Right,
}
use Align::{Left, Right};

/// Prints an aligned table: a bold header, two spaces between columns, the last column
/// unpadded.
pub fn table(columns: &[(&str, Align)], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            match (columns[i].1, i == last) {
                (Left, true) => out.push_str(cell),
                (Left, false) => out.push_str(&format!("{cell}{pad}  ")),
                (Right, true) => out.push_str(&format!("{pad}{cell}")),
                (Right, false) => out.push_str(&format!("{pad}{cell}  ")),
            }
        }
        out
    };
    let header = line(columns.iter().map(|(h, _)| *h).collect());
    anstream::println!("{}", styled(HEADING, header));
    for row in &rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// `Lock/relation`, or empty when the backend waits on nothing.
pub fn wait(kind: &Option<String>, event: &Option<String>) -> String {
    match (kind, event) {
        (Some(k), Some(e)) => format!("{k}/{e}"),
        (Some(k), None) => k.clone(),
        _ => String::new(),
    }
}

/// A statement on one line (white space runs collapsed), cut to `max` characters.
pub fn one_line(sql: &str, max: usize) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max - 1).collect();
    format!("{cut}…")
}

/// `512 B`, `1.2 KiB`, `3.4 MiB`, `1.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `250 ms`, `3.2 s`, `1 min`, `5 min 3 s`, `2 h 5 min`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", d.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let s = d.as_secs();
        match s % 60 {
            0 => format!("{} min", s / 60),
            rest => format!("{} min {rest} s", s / 60),
        }
    } else {
        let s = d.as_secs();
        match s % 3600 / 60 {
            0 => format!("{} h", s / 3600),
            rest => format!("{} h {rest} min", s / 3600),
        }
    }
}

/// Parses `500ms`, `30s`, `1.5s`, `5m`, `5min`, `2h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|_| !scale.is_nan())
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("`{text}` is not a duration; write e.g. 500ms, 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "5x", "-1s", "1.2.3s", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1_258_291), "1.2 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration(Duration::from_millis(3210)), "3.2 s");
        assert_eq!(duration(Duration::from_secs(303)), "5 min 3 s");
        assert_eq!(duration(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(duration(Duration::from_secs(60)), "1 min");
        assert_eq!(duration(Duration::from_secs(7200)), "2 h");
        assert_eq!(one_line("SELECT  1\n  FROM t", 60), "SELECT 1 FROM t");
        assert_eq!(one_line("SELECT 123456", 8), "SELECT …");
    }
}
