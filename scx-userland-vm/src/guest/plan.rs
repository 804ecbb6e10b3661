//! The test plan the guest's `/init` runs, and its file format: the one definition shared by
//! the image builder ([`crate::image`]) and by the guest's `/init`, which is built from this
//! very file and parses it. std only, so both sides can use it.
//!
//! # `/etc/vm-plan` format, version 1
//!
//! UTF-8 text, one record per line, each line ended by `\n`. Fields are separated by a single
//! TAB. Inside a field, four characters are escaped: `\\` (backslash), `\t` (TAB), `\n` (line
//! feed), `\r` (carriage return); any other backslash sequence is an error. So arguments and
//! environment values may contain spaces, tabs and newlines, and an empty field is just
//! nothing between two TABs.
//!
//! ```text
//! scx-vm-plan<TAB>1                                  first line, always
//! env<TAB>KEY<TAB>VALUE                              zero or more; given to every test
//! test<TAB>NAME<TAB>TIMEOUT_MS<TAB>ARG0[<TAB>ARG…]   zero or more; run in file order
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. `NAME` is non-empty and has no
//! whitespace or control characters (it is one token of the `init: result` line);
//! `TIMEOUT_MS` is a decimal number of milliseconds, at least 1; `ARG0` (the program: an
//! absolute guest path or a name looked up in `PATH`) is non-empty; no field contains NUL;
//! `KEY` is non-empty and contains no `=`.
#![allow(dead_code)]

use std::fmt;
use std::time::Duration;

/// Where the image builder puts the plan and where `/init` reads it.
pub const PLAN_PATH: &str = "/etc/vm-plan";

/// The first line of every plan file (magic and format version, TAB-separated).
pub const HEADER: &str = "scx-vm-plan\t1";

/// One test the guest's `/init` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanTest {
    /// Name printed in the result line (e.g. `harness::btf_vmlinux_present`).
    pub name: String,
    /// Killed (with its whole process group) after this long.
    pub timeout: Duration,
    /// Program (absolute guest path) and its arguments.
    pub argv: Vec<String>,
}

/// What the guest's `/init` runs, written to `/etc/vm-plan` in the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Environment given to every test (in addition to the guest's defaults).
    pub env: Vec<(String, String)>,
    /// The tests, run one at a time, in order.
    pub tests: Vec<PlanTest>,
}

/// Why a plan cannot be rendered or parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(
    /// The message.
    pub String,
);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

fn err<T>(msg: impl Into<String>) -> Result<T, PlanError> {
    Err(PlanError(msg.into()))
}

/// Whether `name` can be a test name (one token of the result line).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_test(t: &PlanTest) -> Result<(), PlanError> {
    if !valid_name(&t.name) {
        return err(format!(
            "test name {:?} must be non-empty without whitespace or control characters",
            t.name
        ));
    }
    if t.timeout.as_millis() == 0 {
        return err(format!("test {}: timeout must be at least 1 ms", t.name));
    }
    match t.argv.first() {
        None => return err(format!("test {}: empty argv", t.name)),
        Some(a) if a.is_empty() => return err(format!("test {}: empty program name", t.name)),
        Some(_) => {}
    }
    if t.argv.iter().any(|a| a.contains('\0')) {
        return err(format!("test {}: an argument contains NUL", t.name));
    }
    Ok(())
}

fn check_env(key: &str, value: &str) -> Result<(), PlanError> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return err(format!(
            "env key {key:?} must be non-empty without '=' or NUL"
        ));
    }
    if value.contains('\0') {
        return err(format!("env {key}: value contains NUL"));
    }
    Ok(())
}

fn escape_into(out: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(field: &str) -> Result<String, String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(o) => return Err(format!("unknown escape \\{o}")),
            None => return Err("backslash at end of field".into()),
        }
    }
    Ok(out)
}

fn push_record(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        escape_into(out, f);
    }
    out.push('\n');
}

impl Plan {
    /// The plan in the `/etc/vm-plan` format; fails if a name, key or argv is not allowed.
    pub fn render(&self) -> Result<String, PlanError> {
        let mut out = String::new();
        out.push_str(HEADER);
        out.push('\n');
        for (k, v) in &self.env {
            check_env(k, v)?;
            push_record(&mut out, &["env", k, v]);
        }
        for t in &self.tests {
            check_test(t)?;
            let ms = t.timeout.as_millis().to_string();
            let mut fields: Vec<&str> = vec!["test", &t.name, &ms];
            fields.extend(t.argv.iter().map(String::as_str));
            push_record(&mut out, &fields);
        }
        Ok(out)
    }

    /// Parse the `/etc/vm-plan` format; errors name the line.
    pub fn parse(text: &str) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        let mut lines = text.split('\n').enumerate();
        // A final '\n' leaves one empty piece; a missing one is tolerated.
        match lines.next() {
            Some((_, h)) if h == HEADER => {}
            Some((_, h)) => {
                return err(format!(
                    "line 1: expected header {HEADER:?}, found {:?}",
                    h.chars().take(40).collect::<String>()
                ))
            }
            None => return err("empty plan"),
        }
        for (i, line) in lines {
            let n = i + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = line
                .split('\t')
                .map(unescape)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PlanError(format!("line {n}: {e}")))?;
            match fields[0].as_str() {
                "env" => {
                    let [_, k, v] = &fields[..] else {
                        return err(format!("line {n}: env needs KEY and VALUE"));
                    };
                    check_env(k, v).map_err(|e| PlanError(format!("line {n}: {e}")))?;
                    plan.env.push((k.clone(), v.clone()));
                }
                "test" => {
                    if fields.len() < 4 {
                        return err(format!("line {n}: test needs NAME, TIMEOUT_MS and ARG0"));
                    }
                    let ms: u64 = fields[2]
                        .parse()
                        .map_err(|_| PlanError(format!("line {n}: bad timeout {:?}", fields[2])))?;
                    let t = PlanTest {
                        name: fields[1].clone(),
                        timeout: Duration::from_millis(ms),
                        argv: fields[3..].to_vec(),
                    };
                    check_test(&t).map_err(|e| PlanError(format!("line {n}: {e}")))?;
                    plan.tests.push(t);
                }
                other => return err(format!("line {n}: unknown record {other:?}")),
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, ms: u64, argv: &[&str]) -> PlanTest {
        PlanTest {
            name: name.into(),
            timeout: Duration::from_millis(ms),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn render_is_the_documented_format() {
        let plan = Plan {
            env: vec![("RUST_LOG".into(), "debug".into())],
            tests: vec![t("a::b", 30_000, &["/bin/x", "--flag", "two words"])],
        };
        assert_eq!(
            plan.render().unwrap(),
            "scx-vm-plan\t1\nenv\tRUST_LOG\tdebug\ntest\ta::b\t30000\t/bin/x\t--flag\ttwo words\n"
        );
    }

    #[test]
    fn round_trip_with_awkward_characters() {
        let plan = Plan {
            env: vec![
                ("A".into(), "has spaces and\ttab".into()),
                ("EMPTY".into(), String::new()),
                ("B".into(), "back\\slash \\t not-a-tab\nnewline\r".into()),
            ],
            tests: vec![
                t("one", 1, &["true"]),
                t("two", 2500, &["/bin/sh", "-c", "echo 'a\tb' \\n", "", "#x"]),
                t("ünïcode", 60_000, &["/bin/é x"]),
            ],
        };
        let text = plan.render().unwrap();
        // One line per record plus the header: no raw newline/tab escaped wrongly.
        assert_eq!(text.lines().count(), 1 + 3 + 3);
        assert_eq!(Plan::parse(&text).unwrap(), plan);
    }

    #[test]
    fn parse_tolerates_comments_blank_lines_and_no_final_newline() {
        let p = Plan::parse("scx-vm-plan\t1\n\n# c\ntest\tx\t5\tsleep\t1").unwrap();
        assert_eq!(p.tests, vec![t("x", 5, &["sleep", "1"])]);
        assert!(p.env.is_empty());
    }

    #[test]
    fn parse_rejects_bad_input_naming_the_line() {
        let bad = [
            ("", "header"),
            ("scx-vm-plan\t2\n", "header"),
            ("scx-vm-plan\t1\nfoo\tx\n", "line 2: unknown record"),
            ("scx-vm-plan\t1\ntest\tx\t5\n", "line 2: test needs"),
            (
                "scx-vm-plan\t1\n\ntest\tx\tsoon\ta\n",
                "line 3: bad timeout",
            ),
            ("scx-vm-plan\t1\ntest\tx\t0\ta\n", "at least 1 ms"),
            ("scx-vm-plan\t1\ntest\ta b\t5\ta\n", "test name"),
            ("scx-vm-plan\t1\ntest\tx\t5\t\n", "empty program"),
            ("scx-vm-plan\t1\ntest\tx\t5\ta\\q\n", "unknown escape"),
            ("scx-vm-plan\t1\ntest\tx\t5\ta\\\n", "backslash at end"),
            ("scx-vm-plan\t1\nenv\tK\n", "env needs"),
            ("scx-vm-plan\t1\nenv\tK=V\tx\n", "env key"),
        ];
        for (text, want) in bad {
            let e = Plan::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn render_rejects_what_parse_would() {
        let cases = [
            Plan {
                tests: vec![t("a b", 5, &["x"])],
                ..Plan::default()
            },
            Plan {
                tests: vec![t("x", 0, &["x"])],
                ..Plan::default()
            },
            Plan {
                tests: vec![t("x", 5, &[])],
                ..Plan::default()
            },
            Plan {
                tests: vec![t("x", 5, &["a\0b"])],
                ..Plan::default()
            },
            Plan {
                env: vec![("".into(), "v".into())],
                ..Plan::default()
            },
        ];
        for p in cases {
            assert!(p.render().is_err(), "{p:?}");
        }
    }
}
