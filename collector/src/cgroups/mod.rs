//! From the cgroup ids the kernel programs count by to the workloads SREs know: cgroup v2 paths
//! (`fs`), the pod and container a path names (`identity`), their names in the Kubernetes API
//! (`kubernetes`), and the bounded set of cgroups exported (`tracker`).
pub mod fs;
pub mod identity;
pub mod kubernetes;
pub mod tracker;
