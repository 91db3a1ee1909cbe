//! Printing: colour only where it helps (a terminal, no NO_COLOR), JSON on request.

use std::io::IsTerminal;

use anstream::ColorChoice;
use anstyle::{AnsiColor, Style};

use crate::cli::ColorWhen;

/// Sets the colour choice for everything printed through `anstream`: `auto` colours a
/// terminal unless `NO_COLOR` is set (anstream reads both).
pub fn init_color(when: ColorWhen) {
    let choice = match when {
        ColorWhen::Auto => ColorChoice::Auto,
        ColorWhen::Always => ColorChoice::Always,
        ColorWhen::Never => ColorChoice::Never,
    };
    choice.write_global();
}

/// Green: done, applied.
pub const GOOD: Style = AnsiColor::Green.on_default();
/// Yellow: pending, would change.
pub const PENDING: Style = AnsiColor::Yellow.on_default();
/// Bold red: errors, drift.
pub const BAD: Style = AnsiColor::Red.on_default().bold();
/// Bold: headings.
pub const HEADING: Style = Style::new().bold();

/// `text` in `style` (the style's codes are stripped when colour is off).
/// A history timestamp as the CLI has always printed it: `2026-11-25T20:02:29.568671`.
pub fn timestamp(t: &pgdbm_core::sqlx::types::time::PrimitiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub fn styled(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// Prints `== module NAME (schema S) ==`, the heading of one module's output when a command
/// acts on several.
pub fn module_heading(module: &str, schema: Option<&str>) {
    anstream::println!(
        "{}",
        styled(
            HEADING,
            format!(
                "== module {module} (schema {}) ==",
                schema.unwrap_or("public")
            )
        )
    );
}

/// Prints the error on stderr as `error: …`.
pub fn error(e: &impl std::fmt::Display) {
    anstream::eprintln!("{} {e}", styled(BAD, "error:"));
}

/// Prints a JSON document on stdout.
pub fn json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value serialises")
    );
}

/// Whether stderr is a terminal (progress bars go there, and only there).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// One line per migration file a run applied: `applied NAME (N ms)`.
pub fn applied(files: &[pgdbm_core::AppliedFile]) {
    for a in files {
        anstream::println!(
            "{} {} ({} ms)",
            styled(GOOD, "applied"),
            a.filename,
            a.execution_time.as_millis()
        );
    }
}
