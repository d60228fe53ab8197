//! The old home of the sysfs helpers, now in [`crate::read`] (reading) and [`crate::goparse`]
//! (Go's rules); kept only for `ethtool`, which still imports from here.
pub use crate::read::read_dir_sorted;
