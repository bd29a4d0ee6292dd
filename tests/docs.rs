//! The docs run: shell blocks of README.md and docs/*.md that a reader is told to paste
//! are executed here as written, so they cannot drift from what the commands do.
//!
//! A block is marked by the HTML comment on the line before it (invisible when rendered):
//! `<!-- docs-test: run -->` runs it in a fresh sandbox, `<!-- docs-test: run after the
//! previous block -->` runs it in the sandbox of the block before (it uses that block's
//! files), and `<!-- docs-test: skip: WHY -->` says why a block cannot run here (a
//! foreground relay on 0.0.0.0, a public CA, root). Every `sh` block of every page must carry one.
//!
//! A sandbox is a temporary directory: HOME points into it, the fixed paths of the docs
//! (`/tmp/ferry-try`, `/etc/ferry`) are moved into it, every loopback port the block names
//! becomes a free one, and `ferry`, `ferry-relay` and `ferry-cert` are the binaries built
//! for this test, first on PATH. The block runs under `bash -e` (the first failing command
//! fails the test), its background jobs are killed when it ends, and it has two minutes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

const RUN: &str = "<!-- docs-test: run -->";
const RUN_AFTER: &str = "<!-- docs-test: run after the previous block -->";
const SKIP: &str = "<!-- docs-test: skip:";

/// One fenced `sh` block and its marker.
#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    marker: Option<String>,
    text: String,
}

fn blocks(path: &Path) -> Result<Vec<Block>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == "```sh" {
            let marker = i
                .checked_sub(1)
                .map(|j| lines[j].trim())
                .filter(|l| l.starts_with("<!-- docs-test:"))
                .map(str::to_owned);
            let start = i + 1;
            let end = (start..lines.len()).find(|&j| lines[j].trim_end() == "```").context("unclosed block")?;
            out.push(Block {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                line: start,
                marker,
                text: lines[start..end].join("\n") + "\n",
            });
            i = end;
        }
        i += 1;
    }
    Ok(out)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc_files() -> Result<Vec<PathBuf>> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> =
        std::fs::read_dir(repo().join("docs"))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    docs.retain(|p| p.extension().is_some_and(|e| e == "md"));
    docs.sort();
    files.extend(docs);
    Ok(files)
}

/// A loopback TCP port nobody holds right now (UDP too: the relay binds both).
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port with both TCP and UDP free")
}

/// The block as it runs in `sandbox`: fixed paths moved in, named ports replaced.
fn sandboxed(text: &str, sandbox: &Path, ports: &mut BTreeMap<String, String>) -> Result<String> {
    let mut text = text
        .replace("/tmp/ferry-try", &sandbox.join("try").to_string_lossy())
        .replace("/etc/ferry", &sandbox.join("etc/ferry").to_string_lossy());
    let mut rest = text.as_str();
    let mut found = Vec::new();
    while let Some(at) = rest.find("127.0.0.1:") {
        let digits: String = rest[at + 10..].chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            found.push(digits);
        }
        rest = &rest[at + 10..];
    }
    for port in found {
        if !ports.contains_key(&port) {
            ports.insert(port.clone(), free_port()?.to_string());
        }
    }
    // Whole words only, so a port also given alone (`http.server 8000`) moves with it.
    for (from, to) in ports.iter() {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (at, _) in text.match_indices(from.as_str()) {
            let before = text[..at].chars().next_back();
            let after = text[at + from.len()..].chars().next();
            let word = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
            if at >= last && word(before) && word(after) {
                out.push_str(&text[last..at]);
                out.push_str(to);
                last = at + from.len();
            }
        }
        out.push_str(&text[last..]);
        text = out;
    }
    Ok(text)
}

/// Runs `script` under `bash -e` in `sandbox`; returns stdout. The shell gets a process
/// group of its own, killed on every exit path, so background jobs never outlive the test.
async fn run_script(script: &str, sandbox: &Path) -> Result<String> {
    let bin = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().context("the binaries' directory")?.to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let home = sandbox.join("home");
    std::fs::create_dir_all(&home)?;
    let wrapped = format!("set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");
    let child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&wrapped)
        .current_dir(sandbox)
        .env("PATH", path)
        .env("HOME", &home)
        .env_remove("FERRY_LOG")
        .env_remove("FERRY_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("bash is needed for this test")?;
    let group = rustix::process::Pid::from_raw(child.id().context("the shell's pid")? as i32).context("a valid pid")?;
    struct KillGroup(rustix::process::Pid);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = rustix::process::kill_process_group(self.0, rustix::process::Signal::KILL);
        }
    }
    let _guard = KillGroup(group);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .context("the block did not finish within 120 s")??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success(),
        "the block failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    Ok(stdout.into_owned())
}

/// Every block of docs/*.md marked to run, grouped by sandbox, in document order
/// (README.md's one runnable block has a test of its own, which also checks its output).
fn runnable() -> Result<Vec<Vec<Block>>> {
    let mut groups: Vec<Vec<Block>> = Vec::new();
    for file in doc_files()?.into_iter().skip(1) {
        for block in blocks(&file)? {
            match block.marker.as_deref() {
                Some(RUN) => groups.push(vec![block]),
                Some(RUN_AFTER) => groups.last_mut().context("`run after` with no block before")?.push(block),
                _ => {}
            }
        }
    }
    Ok(groups)
}

#[test]
fn every_readme_shell_block_runs_or_says_why_not() -> Result<()> {
    let mut unmarked = Vec::new();
    for file in doc_files()? {
        for block in blocks(&file)? {
            let marker = block.marker.as_deref().unwrap_or_default();
            let known = marker == RUN || marker == RUN_AFTER || marker.starts_with(SKIP);
            // Every page: each block says whether it runs.
            if !known {
                unmarked.push(format!("{}:{}", block.file, block.line));
            }
            if marker.starts_with(SKIP) {
                let why = marker.trim_start_matches(SKIP).trim_end_matches("-->").trim();
                ensure!(!why.is_empty(), "{}:{}: a skip says why", block.file, block.line);
            }
        }
    }
    ensure!(unmarked.is_empty(), "shell blocks without a docs-test marker: {unmarked:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_try_all_three_runs_as_pasted_and_curl_gets_the_page() -> Result<()> {
    let readme = blocks(&repo().join("README.md"))?;
    let block = readme
        .iter()
        .find(|b| b.marker.as_deref() == Some(RUN) && b.text.contains("curl"))
        .context("README.md's \"Try all three\" block is marked to run")?;
    let sandbox = tempfile::tempdir()?;
    let script = sandboxed(&block.text, sandbox.path(), &mut BTreeMap::new())?;
    for fixed in ["4433", "8000", "9000", "4434", "/tmp/ferry-try"] {
        ensure!(!script.contains(fixed), "{fixed} was not moved into the sandbox:\n{script}");
    }
    let stdout = run_script(&script, sandbox.path()).await?;
    ensure!(stdout.contains("hello through ferry"), "curl's page is missing from the output:\n{stdout}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_docs_block_marked_to_run_runs() -> Result<()> {
    let groups = runnable()?;
    ensure!(groups.len() >= 2, "certificates.md's blocks are marked ({} groups)", groups.len());
    for group in groups {
        let sandbox = tempfile::tempdir()?;
        let mut ports = BTreeMap::new();
        let mut script = String::new();
        for block in &group {
            script.push_str(&sandboxed(&block.text, sandbox.path(), &mut ports)?);
        }
        let at = format!("{}:{}", group[0].file, group[0].line);
        run_script(&script, sandbox.path()).await.with_context(|| format!("the block at {at}"))?;
    }
    Ok(())
}
