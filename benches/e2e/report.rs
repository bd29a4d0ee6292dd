//! Results and how they are shown: a [`Row`] of [`Cell`]s per forwarder and round, the
//! median over rounds, the spread (lowest–highest) per column, and the markdown table
//! with each row's ratios to rathole. The format is what docs/benchmarks.md quotes and
//! what before/after comparisons diff, so it stays as it is.

use anyhow::Result;

use crate::flags::Sizes;
use crate::forwarders::Kind;

/// One row of results; `None` is printed as "n/a" (not applicable or not measured).
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub label: String,
    pub up1: Cell,
    pub down1: Cell,
    pub up8: Cell,
    pub down8: Cell,
    pub p50: Cell,
    pub p99: Cell,
    pub setups: Cell,
    /// New sessions per second one at a time (as a player opening a connection per request).
    pub setups_serial: Cell,
    pub rss: Vec<Cell>,
    pub cpu_per_gb: Cell,
    pub note: Option<String>,
}

impl Row {
    /// Each cell's median over `rounds` of one row (the first note, if any, is kept).
    pub fn median(rounds: Vec<Row>) -> Row {
        let first = rounds.first().cloned().unwrap_or_default();
        let column = |pick: &dyn Fn(&Row) -> &Cell| Cell::median(rounds.iter().map(pick));
        Row {
            label: first.label.clone(),
            up1: column(&|r| &r.up1),
            down1: column(&|r| &r.down1),
            up8: column(&|r| &r.up8),
            down8: column(&|r| &r.down8),
            p50: column(&|r| &r.p50),
            p99: column(&|r| &r.p99),
            setups: column(&|r| &r.setups),
            setups_serial: column(&|r| &r.setups_serial),
            // Measured in the first round only.
            rss: first.rss.clone(),
            cpu_per_gb: column(&|r| &r.cpu_per_gb),
            note: rounds.iter().find_map(|r| r.note.clone()),
        }
    }

    /// "column lo–hi" for every column that was measured more than once and varied.
    pub fn spread(rounds: &[Row]) -> String {
        /// Name, the cell, decimals shown.
        type Column = (&'static str, fn(&Row) -> &Cell, usize);
        let columns: [Column; 9] = [
            ("up 1", |r| &r.up1, 2),
            ("down 1", |r| &r.down1, 2),
            ("up 8", |r| &r.up8, 2),
            ("down 8", |r| &r.down8, 2),
            ("p50", |r| &r.p50, 0),
            ("p99", |r| &r.p99, 0),
            ("setups/s", |r| &r.setups, 0),
            ("setups/s 1", |r| &r.setups_serial, 0),
            ("CPU s/GB", |r| &r.cpu_per_gb, 2),
        ];
        columns
            .iter()
            .filter_map(|(name, pick, decimals)| {
                let values: Vec<f64> = rounds.iter().filter_map(|r| pick(r).value()).collect();
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (values.len() > 1).then(|| format!("{name} {lo:.decimals$}–{hi:.decimals$}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A measured value, or why there is none.
#[derive(Clone, Debug, Default)]
pub enum Cell {
    Value(f64),
    /// Measured with fewer sessions than the column says (open-file limit).
    Fewer(f64, usize),
    #[default]
    NotApplicable,
    Failed,
}

impl Cell {
    pub fn of(result: Result<f64>, what: &str, row: &str) -> Self {
        match result {
            Ok(v) => Cell::Value(v),
            Err(e) => {
                eprintln!("  {row}: {what} failed: {e:#}");
                Cell::Failed
            }
        }
    }

    /// The median of the measured values (the upper one of an even count); failed if
    /// nothing was measured but something failed, not applicable if nothing was tried.
    fn median<'a>(cells: impl Iterator<Item = &'a Cell>) -> Cell {
        let (mut values, mut fewer, mut failed) = (Vec::new(), None, false);
        for cell in cells {
            match cell {
                Cell::Value(v) => values.push(*v),
                Cell::Fewer(v, n) => {
                    values.push(*v);
                    fewer = Some(*n);
                }
                Cell::Failed => failed = true,
                Cell::NotApplicable => {}
            }
        }
        values.sort_by(f64::total_cmp);
        match (values.get(values.len() / 2), fewer) {
            (Some(v), Some(n)) => Cell::Fewer(*v, n),
            (Some(v), None) => Cell::Value(*v),
            (None, _) if failed => Cell::Failed,
            (None, _) => Cell::NotApplicable,
        }
    }

    fn value(&self) -> Option<f64> {
        match self {
            Cell::Value(v) => Some(*v),
            _ => None,
        }
    }

    fn show(&self, decimals: usize) -> String {
        match self {
            Cell::Value(v) => format!("{v:.decimals$}"),
            Cell::Fewer(v, n) => format!("{v:.decimals$} (at {n})"),
            Cell::NotApplicable => "n/a".into(),
            Cell::Failed => "fail".into(),
        }
    }
}

/// Prints the table: one line per row, ratios to rathole-noise in the last column.
pub fn print_table(rows: &[Row], sizes: &Sizes) {
    let mut header = vec![
        "".to_string(),
        "up 1 (Gbit/s)".into(),
        "down 1".into(),
        format!("up {}", sizes.parallel),
        format!("down {}", sizes.parallel),
        "RTT p50 (µs)".into(),
        "RTT p99".into(),
        "setups/s".into(),
        "setups/s 1".into(),
        "RSS idle (MiB)".into(),
    ];
    for count in &sizes.idle {
        header.push(format!("RSS {}k", count / 1000));
    }
    header.push("CPU s/GB".into());
    header.push("÷ rathole-noise, same column order".into());

    let cells = |r: &Row| -> Vec<(Cell, usize, bool)> {
        // (cell, decimals, higher is better)
        let mut v = vec![
            (r.up1.clone(), 2, true),
            (r.down1.clone(), 2, true),
            (r.up8.clone(), 2, true),
            (r.down8.clone(), 2, true),
            (r.p50.clone(), 0, false),
            (r.p99.clone(), 0, false),
            (r.setups.clone(), 0, true),
            (r.setups_serial.clone(), 0, true),
        ];
        for c in &r.rss {
            v.push((c.clone(), 1, false));
        }
        v.push((r.cpu_per_gb.clone(), 2, false));
        v
    };
    let reference = rows.iter().find(|r| r.label == Kind::RatholeNoise.label()).map(cells);
    let mut table: Vec<Vec<String>> = vec![header];
    for row in rows {
        let mine = cells(row);
        let mut line = vec![row.label.clone()];
        line.extend(mine.iter().map(|(c, d, _)| c.show(*d)));
        let ratios: Vec<String> = match &reference {
            Some(reference) if row.label != Kind::RatholeNoise.label() => mine
                .iter()
                .zip(reference)
                .map(|((a, _, _), (b, _, _))| match (a.value(), b.value()) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                })
                .collect(),
            _ => vec![],
        };
        let last = match (&row.note, ratios.is_empty()) {
            (Some(note), _) => note.clone(),
            (None, true) => "1 (reference)".into(),
            (None, false) => ratios.join(" "),
        };
        line.push(last);
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|l| l.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    for (n, line) in table.iter().enumerate() {
        let padded: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                if i == 0 || i + 1 == line.len() {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        println!("| {} |", padded.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 || i + 1 == widths.len() {
                        "-".repeat(*w)
                    } else {
                        format!("{}:", "-".repeat(w.saturating_sub(1)))
                    }
                })
                .collect();
            println!("| {} |", rule.join(" | "));
        }
    }
}
