//! The eBPF collectors, one per subsystem, each declaring its kernel hooks (programs per hook
//! type, what they need from the kernel's layout, map sizing) beside the reader of its
//! maps; `reader`, the shape they share; and `runtime`, what they all stand on.
pub mod block;
pub mod cgroup;
pub mod irq;
pub mod net;
pub mod reader;
pub mod runtime;
pub mod sched;
