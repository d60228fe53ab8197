//! A kubepods-style cgroup hierarchy for tests, built under the cgroup v2 mount.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

/// The cgroup v2 mount, found as the daemon finds it.
pub fn cgroup2_root() -> Option<PathBuf> {
    collector::cgroups::fs::find_root(None, Path::new("/sys")).ok()
}

/// The cgroup v2 mount, or skips the test (with the reason) on a host without one.
#[macro_export]
macro_rules! require_cgroup2 {
    () => {
        match $crate::common::cgroup::cgroup2_root() {
            Some(root) => root,
            None => {
                eprintln!("skipped: no cgroup v2 hierarchy mounted");
                return;
            }
        }
    };
}

/// A pod's container cgroup as kubelet (systemd driver) and containerd lay it out; removed,
/// deepest first, on drop.
pub struct PodCgroup {
    /// Created directories, outermost first.
    created: Vec<PathBuf>,
    pub uid: String,
    pub container_id: String,
}

impl PodCgroup {
    pub fn create(root: &Path, tag: u8) -> Self {
        let uid = format!("6f1d3a2c-8b7e-4c1a-9d2e-3f4a5b6c7d{tag:02x}");
        let container_id = format!("{tag:02x}").repeat(32);
        let relative = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
            uid.replace('-', "_")
        );
        // Every level is removed on drop if empty by then, even one an earlier run left.
        let mut created = Vec::new();
        let mut path = root.to_path_buf();
        for component in relative.split('/') {
            path.push(component);
            if !path.exists() {
                std::fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
            }
            created.push(path.clone());
        }
        Self {
            created,
            uid,
            container_id,
        }
    }

    pub fn container(&self) -> &Path {
        self.created.last().expect("the container cgroup")
    }

    /// Runs `script` with bash inside the container cgroup, to completion.
    pub fn run(&self, script: &str) {
        let procs = self.container().join("cgroup.procs");
        let status = Command::new("bash")
            .arg("-c")
            .arg(format!("echo $$ > '{}' && {script}", procs.display()))
            .status()
            .expect("running bash");
        assert!(status.success(), "workload failed: {script}");
    }

    /// Starts `script` with bash inside the container cgroup, in the background.
    pub fn spawn(&self, script: &str) -> Child {
        let procs = self.container().join("cgroup.procs");
        Command::new("bash")
            .arg("-c")
            .arg(format!("echo $$ > '{}' && {script}", procs.display()))
            .spawn()
            .expect("running bash")
    }

    /// CPU time of the container cgroup by the kernel's own accounting (`cpu.stat`, present
    /// whether or not the cpu controller is enabled).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(self.container().join("cpu.stat")).expect("cpu.stat");
        let usage = stat
            .lines()
            .find_map(|line| line.strip_prefix("usage_usec "))
            .expect("usage_usec in cpu.stat");
        usage.parse::<f64>().unwrap() / 1e6
    }

    /// Removes the container's cgroup (its processes have exited), keeping the pod's.
    pub fn remove_container(&mut self) {
        let container = self.created.pop().expect("the container cgroup");
        std::fs::remove_dir(&container)
            .unwrap_or_else(|e| panic!("removing {}: {e}", container.display()));
    }
}

impl Drop for PodCgroup {
    /// Kills what still runs in the container (cgroup.kill, 5.14+) and removes it, retrying
    /// while the killed processes exit; then the pod's levels, where no other test still has a
    /// pod.
    fn drop(&mut self) {
        let scope = format!("cri-containerd-{}.scope", self.container_id);
        if let Some(container) = self
            .created
            .pop_if(|c| c.file_name().is_some_and(|name| *name == *scope))
        {
            let _ = std::fs::write(container.join("cgroup.kill"), "1");
            for _ in 0..50 {
                match std::fs::remove_dir(&container) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
