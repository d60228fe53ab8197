//! `processes`: how many processes and threads there are and in which state, against the
//! kernel's limits, as node_exporter's processes collector. Walks /proc/<pid>/stat for each
//! process (its state and thread count) and /proc/<pid>/task/<tid>/stat for each of its other
//! threads (their states); reads /proc/sys/kernel/threads-max and pid_max.
//!
//! A process or thread that exits during the walk (its files gone: ENOENT, ESRCH) is skipped,
//! as upstream skips it; any other failure to read or parse a stat file fails the scrape. The
//! walk keeps one read buffer and one path for the whole scrape and reads the folders as it
//! goes, so its memory does not grow with the number of processes; only a state letter seen
//! for the first time is kept.
use std::{collections::BTreeMap, fmt::Write as _, io::Read as _, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "processes",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// procfs' `ReadFileNoStat` limit, for one stat file.
const MAX_STAT_BYTES: u64 = 1024 * 1024;

struct ProcessesCollector {
    proc: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(ProcessesCollector {
        proc: context.procfs.clone(),
    }))
}

/// What the walk counted.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    pids: u64,
    /// The sum of the processes' thread counts (field 20 of their stat).
    threads: i64,
    states: BTreeMap<String, i32>,
    thread_states: BTreeMap<String, i32>,
}

/// Adds one to `state`'s count, allocating its key only the first time.
fn count(states: &mut BTreeMap<String, i32>, state: &[u8]) {
    let state = String::from_utf8_lossy(state);
    match states.get_mut(state.as_ref()) {
        Some(n) => *n += 1,
        None => {
            states.insert(state.into_owned(), 1);
        }
    }
}

/// The fields of a stat file the collector uses.
#[derive(Debug, PartialEq)]
struct Stat<'a> {
    state: &'a [u8],
    num_threads: i64,
}

/// Whether a field of a stat file after the state is signed, in procfs' `ProcStat` order
/// (ppid .. cguest_time, fields 4 to 44 of proc(5)); procfs scans all of them, so a bad one in
/// any fails, and fewer of them is an error.
const SIGNED: [bool; 41] = {
    let mut signed = [false; 41];
    // ppid, pgrp, session, tty_nr, tpgid
    signed[0] = true;
    signed[1] = true;
    signed[2] = true;
    signed[3] = true;
    signed[4] = true;
    // cutime, cstime, priority, nice, num_threads, itrealvalue
    signed[12] = true;
    signed[13] = true;
    signed[14] = true;
    signed[15] = true;
    signed[16] = true;
    signed[17] = true;
    // rss
    signed[20] = true;
    // exit_signal
    signed[34] = true;
    // guest_time, cguest_time
    signed[39] = true;
    signed[40] = true;
    signed
};

/// Index of num_threads in [`SIGNED`].
const NUM_THREADS: usize = 16;

/// Space as Go's `fmt.Fscan` sees it in ASCII text.
fn is_scan_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Parses a /proc/<pid>/stat as procfs' `Proc.Stat`: the command is between the first `(`
/// and the last `)`, the fields start two bytes after that `)`. Inputs on which procfs
/// panics (no byte after the `)`, a `)` before the `(`) are errors here.
fn parse_stat(data: &[u8]) -> Result<Stat<'_>, String> {
    let left = data.iter().position(|&b| b == b'(');
    let right = data.iter().rposition(|&b| b == b')');
    let (Some(left), Some(right)) = (left, right) else {
        return Err("unexpected format, couldn't extract comm".to_owned());
    };
    if right < left || right + 2 > data.len() {
        return Err("unexpected format, couldn't extract comm".to_owned());
    }
    let mut tokens = data[right + 2..]
        .split(|&b| is_scan_space(b))
        .filter(|t| !t.is_empty());
    let state = tokens.next().ok_or("unexpected EOF")?;
    let mut num_threads = 0;
    for (index, signed) in SIGNED.iter().enumerate() {
        let token = tokens.next().ok_or("unexpected EOF")?;
        let text = std::str::from_utf8(token).map_err(|_| "expected integer".to_owned())?;
        // fmt.Fscan reads integers as `ParseInt(s, 0, 64)` / `ParseUint(s, 0, 64)`.
        if *signed {
            let value = goparse::parse_int(text, 0, 64)
                .ok_or_else(|| format!("field {}: bad integer {text:?}", index + 4))?;
            if index == NUM_THREADS {
                num_threads = value;
            }
        } else if goparse::parse_uint(text, 0, 64).is_none() {
            return Err(format!(
                "field {}: bad unsigned integer {text:?}",
                index + 4
            ));
        }
    }
    Ok(Stat { state, num_threads })
}

/// Whether a read error means the process or thread went away (upstream's `isIgnoredError`).
fn went_away(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ESRCH)
}

/// A decimal name of /proc (a pid) or of a task folder (a tid), as procfs' `AllProcs` reads it
/// (Go's `ParseInt(name, 10, 64)`).
fn numbered(entry: &std::fs::DirEntry) -> Option<i64> {
    entry.file_name().to_str()?.parse().ok()
}

/// The walk's reusable state: one read buffer, one path, one pid text and one state.
struct Walk {
    buffer: Vec<u8>,
    path: PathBuf,
    number: String,
    state: Vec<u8>,
}

impl Walk {
    /// Pushes `id` as Go's `strconv.Itoa` prints it onto the path.
    fn push_id(&mut self, id: i64) {
        self.number.clear();
        let _ = write!(self.number, "{id}");
        self.path.push(&self.number);
    }

    /// Reads `<path>/stat` into the buffer; `Ok(false)` when it went away.
    fn read_stat(&mut self) -> std::io::Result<bool> {
        self.path.push("stat");
        self.buffer.clear();
        let result = std::fs::File::open(&self.path)
            .and_then(|file| file.take(MAX_STAT_BYTES).read_to_end(&mut self.buffer));
        self.path.pop();
        match result {
            Ok(_) => Ok(true),
            Err(error) if went_away(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

impl ProcessesCollector {
    /// Upstream's `getAllocatedThreads`.
    fn walk(&self) -> anyhow::Result<Counts> {
        let entries = std::fs::read_dir(&self.proc)
            .with_context(|| format!("unable to list all processes: {}", self.proc.display()))?;
        let mut walk = Walk {
            buffer: Vec::with_capacity(1024),
            path: self.proc.clone(),
            number: String::new(),
            state: Vec::new(),
        };
        let mut counts = Counts::default();
        for entry in entries {
            let entry = entry.with_context(|| {
                format!("unable to list all processes: {}", self.proc.display())
            })?;
            let Some(pid) = numbered(&entry) else {
                continue;
            };
            walk.push_id(pid);
            let result = self.process(&mut walk, pid, &mut counts);
            walk.path.pop();
            result?;
        }
        Ok(counts)
    }

    /// Counts the process whose folder is `walk.path`.
    fn process(&self, walk: &mut Walk, pid: i64, counts: &mut Counts) -> anyhow::Result<()> {
        let read = walk.read_stat();
        let present = read.with_context(|| format!("error reading stat for pid {pid}"))?;
        if !present {
            tracing::debug!(pid, "file not found when retrieving stats for pid");
            return Ok(());
        }
        let stat = parse_stat(&walk.buffer).map_err(|error| {
            anyhow::anyhow!(
                "error reading stat for pid {pid}: {}/stat: {error}",
                walk.path.display()
            )
        })?;
        counts.pids += 1;
        count(&mut counts.states, stat.state);
        counts.threads += stat.num_threads;
        // The state outlives the buffer, which the threads' stat files reuse.
        walk.state.clear();
        walk.state.extend_from_slice(stat.state);
        let state = std::mem::take(&mut walk.state);
        walk.path.push("task");
        let result = Self::threads(walk, pid, &state, &mut counts.thread_states);
        walk.path.pop();
        walk.state = state;
        result
    }

    /// Upstream's `getThreadStates` for the task folder at `walk.path`.
    fn threads(
        walk: &mut Walk,
        pid: i64,
        process_state: &[u8],
        states: &mut BTreeMap<String, i32>,
    ) -> anyhow::Result<()> {
        // procfs.NewFS: the folder must exist and be a folder.
        match std::fs::metadata(&walk.path) {
            Err(error) if went_away(&error) => {
                tracing::debug!(pid, %error, "file not found when retrieving tasks for pid");
                return Ok(());
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "error reading task for pid {pid}: {}",
                    walk.path.display()
                )));
            }
            Ok(metadata) if !metadata.is_dir() => anyhow::bail!(
                "error reading task for pid {pid}: {} is not a directory",
                walk.path.display()
            ),
            Ok(_) => {}
        }
        let entries = match std::fs::read_dir(&walk.path) {
            Err(error) if went_away(&error) => return Ok(()),
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "unable to list all threads for pid: {pid} {}",
                    walk.path.display()
                )));
            }
            Ok(entries) => entries,
        };
        for entry in entries {
            let entry = match entry {
                // The process exited while its threads were listed.
                Err(error) if went_away(&error) => return Ok(()),
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "unable to list all threads for pid: {pid} {}",
                        walk.path.display()
                    )));
                }
                Ok(entry) => entry,
            };
            let Some(tid) = numbered(&entry) else {
                continue;
            };
            if tid == pid {
                count(states, process_state);
                continue;
            }
            walk.push_id(tid);
            let result = walk.read_stat();
            let parsed = match result {
                Ok(true) => parse_stat(&walk.buffer).map(|stat| Some(stat.state)),
                Ok(false) => Ok(None),
                Err(error) => Err(error.to_string()),
            };
            let path = walk.path.display().to_string();
            walk.path.pop();
            match parsed {
                Ok(Some(state)) => count(states, state),
                Ok(None) => {
                    tracing::debug!(pid, tid, "file not found when retrieving stats for thread");
                }
                Err(error) => anyhow::bail!(
                    "error reading stat for pid:{pid} thread:{tid} err:{path}/stat: {error}"
                ),
            }
        }
        Ok(())
    }
}

impl Collector for ProcessesCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let counts = self
            .walk()
            .context("unable to retrieve number of allocated threads")?;
        out.push(
            MetricFamily::gauge("node_processes_threads", "Allocated threads in system")
                .with_value(counts.threads as f64),
        );
        let max_threads = read::uint_from_file(&self.proc.join("sys/kernel/threads-max"))
            .context("unable to retrieve limit number of threads")?;
        out.push(
            MetricFamily::gauge(
                "node_processes_max_threads",
                "Limit of threads in the system",
            )
            .with_value(max_threads as f64),
        );
        let mut states =
            MetricFamily::gauge("node_processes_state", "Number of processes in each state.");
        for (state, n) in &counts.states {
            states.push([("state", state.as_str())], f64::from(*n));
        }
        out.push(states);
        let mut thread_states = MetricFamily::gauge(
            "node_processes_threads_state",
            "Number of threads in each state.",
        );
        for (state, n) in &counts.thread_states {
            thread_states.push([("thread_state", state.as_str())], f64::from(*n));
        }
        out.push(thread_states);
        let pid_max = read::uint_from_file(&self.proc.join("sys/kernel/pid_max"))
            .context("unable to retrieve limit number of maximum pids allowed")?;
        out.push(
            MetricFamily::gauge("node_processes_pids", "Number of PIDs")
                .with_value(counts.pids as f64),
        );
        out.push(
            MetricFamily::gauge("node_processes_max_processes", "Number of max PIDs limit")
                .with_value(pid_max as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD: &[u8] = b"1 (systemd) S 0 1 1 0 -1 4194560 251790 4127346 167 2406 1041 628 6271 3051 20 0 1 0 13 22654976 3296 18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn parses_state_and_threads() {
        assert_eq!(
            parse_stat(SYSTEMD).unwrap(),
            Stat {
                state: b"S",
                num_threads: 1
            }
        );
        // A command with spaces, parentheses and bytes that are not UTF-8.
        let odd = b"4242 (a) (b \xff) R 1 4242 4242 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 12 0 100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(odd).unwrap(),
            Stat {
                state: b"R",
                num_threads: 12
            }
        );
        // Exactly the 44 fields procfs scans, without a newline.
        let fields: Vec<&[u8]> = SYSTEMD.split(|&b| b == b' ').take(44).collect();
        let short = fields.join(&b' ');
        assert!(parse_stat(&short).is_ok(), "{:?}", parse_stat(&short));
        assert!(parse_stat(&short[..short.len() - 2]).is_err(), "43 fields");
    }

    #[test]
    fn bad_stat_files_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"1 systemd S 0",
            b"1 (systemd)",
            b"1 )systemd( S",
            b"1 (systemd) ",
            b"1 (systemd) S 0 1 1 0 -1",
            b"1 (systemd) S 0 1 1 0 -1 -4194560 1 1 1 1 1 1 1 1 20 0 1 0 13 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 17 1 0 0 0 0 0",
            b"1 (systemd) S 0 1 1 0 -1 4194560 1 1 1 1 1 1 1 1 20 0 x 0 13 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 17 1 0 0 0 0 0",
            b"1 (systemd) S 0 1 1 0 -1 4194560 1 1 1 1 1 1 1 1 20 0 99999999999999999999 0 13 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 17 1 0 0 0 0 0",
            b"1 (systemd) S 0 1 1 0 -1 4194560 1 1 1 1 1 1 1 1 20 0 1 0 13 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 17 1 0 0 0 0 \xff",
        ] {
            assert!(parse_stat(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // The byte after `)` is skipped whatever it is, as procfs does.
        let glued = b"1 (x)XS 0 1 1 0 -1 1 1 1 1 1 1 1 1 1 20 0 3 0 13 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(glued).unwrap().state, b"S");
    }

    /// A fake /proc: `(path, content)` files.
    fn tree(files: &[(&str, &[u8])]) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "processes-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    fn stat(pid: u32, state: &str, threads: u32) -> Vec<u8> {
        format!("{pid} (p{pid}) {state} 1 1 1 0 -1 4194560 1 1 1 1 1 1 1 1 20 0 {threads} 0 13 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 17 1 0 0 0 0 0\n").into_bytes()
    }

    #[test]
    fn walks_processes_and_threads() {
        let dir = tree(&[
            ("1/stat", &stat(1, "S", 1)),
            ("1/task/1/stat", &stat(1, "S", 1)),
            ("300/stat", &stat(300, "S", 3)),
            ("300/task/300/stat", &stat(300, "S", 3)),
            ("300/task/301/stat", &stat(301, "R", 3)),
            ("300/task/302/stat", &stat(302, "D", 3)),
            // A thread that exited: its folder without stat.
            ("300/task/303/comm", b"x\n"),
            ("400/stat", &stat(400, "Z", 1)),
            // A process that exited.
            ("500/comm", b"gone\n"),
            ("self/stat", &stat(1, "S", 1)),
            ("sys/kernel/threads-max", b"63245\n"),
            ("sys/kernel/pid_max", b"4194304\n"),
        ]);
        let c = ProcessesCollector { proc: dir.clone() };
        let counts = c.walk().unwrap();
        assert_eq!(counts.pids, 3);
        assert_eq!(counts.threads, 5);
        assert_eq!(
            counts.states,
            BTreeMap::from([("S".into(), 2), ("Z".into(), 1)])
        );
        assert_eq!(
            counts.thread_states,
            BTreeMap::from([("S".into(), 2), ("R".into(), 1), ("D".into(), 1)])
        );
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        let names: Vec<&str> = out.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node_processes_threads",
                "node_processes_max_threads",
                "node_processes_state",
                "node_processes_threads_state",
                "node_processes_pids",
                "node_processes_max_processes"
            ]
        );

        // A missing limit fails the scrape after what came before it.
        std::fs::remove_file(dir.join("sys/kernel/pid_max")).unwrap();
        let mut out = Vec::new();
        let error = c.update(&mut out).unwrap_err();
        assert!(format!("{error:#}").contains("maximum pids"), "{error:#}");
        assert_eq!(out.len(), 4);
        std::fs::write(dir.join("sys/kernel/threads-max"), "+5\n").unwrap();
        let mut out = Vec::new();
        assert!(c.update(&mut out).is_err());
        assert_eq!(out.len(), 1);

        // A malformed thread stat fails it all.
        std::fs::write(dir.join("300/task/302/stat"), "302 (p) D 1\n").unwrap();
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(
            format!("{error:#}").contains("pid:300 thread:302"),
            "{error:#}"
        );
        // So does a task entry that is not a folder.
        std::fs::write(dir.join("300/task/302/stat"), stat(302, "D", 3)).unwrap();
        std::fs::write(dir.join("400/task"), "").unwrap();
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(
            format!("{error:#}").contains("not a directory"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(
            format!("{error:#}").contains("unable to list all processes"),
            "{error:#}"
        );
    }
}
