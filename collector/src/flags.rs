//! Per-collector flags (`--collector.<name>.<option>`), declared by each collector next to its
//! code as node_exporter's collectors declare theirs, and read back by name at build time.
use std::collections::HashMap;

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, parser::ValueSource};
use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name` / `--no-name`, as kingpin's boolean flags.
    Bool,
    /// `--name=value`; the last one wins.
    Value,
    /// `--name=value`, repeatable.
    Repeated,
}

/// One collector option, as node_exporter declares it.
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    /// Without the leading dashes, e.g. `collector.filesystem.mount-points-exclude`.
    pub name: &'static str,
    pub kind: FlagKind,
    /// node_exporter's default, exactly (`"true"`/`"false"` for booleans); `None` for no default.
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// Deprecated spellings kept hidden, as upstream keeps them.
    pub hidden: bool,
}

impl FlagSpec {
    pub const fn bool(name: &'static str, default: bool, help: &'static str) -> Self {
        Self {
            name,
            kind: FlagKind::Bool,
            default: Some(if default { "true" } else { "false" }),
            help,
            hidden: false,
        }
    }

    pub const fn value(
        name: &'static str,
        default: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind: FlagKind::Value,
            default,
            help,
            hidden: false,
        }
    }

    pub const fn repeated(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind: FlagKind::Repeated,
            default: None,
            help,
            hidden: false,
        }
    }

    pub const fn hidden(self) -> Self {
        Self {
            hidden: true,
            ..self
        }
    }

    /// The clap arguments for this flag (two for a boolean: its `--no-` form is hidden).
    pub fn args(&self, heading: &'static str) -> Vec<Arg> {
        let arg = Arg::new(self.name)
            .long(self.name)
            .help(self.help)
            .hide(self.hidden)
            .help_heading(heading);
        match self.kind {
            FlagKind::Bool => bool_args(arg).into(),
            FlagKind::Value => {
                let arg = arg
                    .action(ArgAction::Set)
                    .num_args(1)
                    .allow_hyphen_values(true);
                vec![match self.default {
                    Some(default) => arg.default_value(default),
                    None => arg,
                }]
            }
            FlagKind::Repeated => vec![arg.action(ArgAction::Append).num_args(1)],
        }
    }
}

/// A kingpin-style boolean: `arg` (`--name`) and its hidden negation `--no-name`, each
/// overriding the other so that the last one given wins.
pub fn bool_args(arg: Arg) -> [Arg; 2] {
    let name = arg.get_id().to_string();
    let off = format!("no-{name}");
    [
        arg.action(ArgAction::SetTrue).overrides_with(off.clone()),
        Arg::new(off.clone())
            .long(off)
            .action(ArgAction::SetTrue)
            .overrides_with(name)
            .hide(true),
    ]
}

/// The value of a [`bool_args`] pair given on the command line (the last of `--name` and
/// `--no-name`); `None` when neither was.
pub fn given_bool(matches: &ArgMatches, name: &str) -> Option<bool> {
    let given = |id: &str| {
        matches.value_source(id) == Some(ValueSource::CommandLine) && matches.get_flag(id)
    };
    if given(name) {
        Some(true)
    } else if given(&format!("no-{name}")) {
        Some(false)
    } else {
        None
    }
}

/// The values of every collector flag after parsing, defaults applied.
#[derive(Clone, Debug, Default)]
pub struct CollectorFlags {
    values: HashMap<&'static str, FlagValue>,
}

#[derive(Clone, Debug)]
struct FlagValue {
    values: Vec<String>,
    /// Given on the command line, not defaulted.
    explicit: bool,
}

impl CollectorFlags {
    pub fn from_matches<'a>(
        matches: &ArgMatches,
        specs: impl IntoIterator<Item = &'a FlagSpec>,
    ) -> Self {
        let mut values = HashMap::new();
        for spec in specs {
            let (flag_values, explicit) = match spec.kind {
                FlagKind::Bool => match given_bool(matches, spec.name) {
                    Some(value) => (vec![value.to_string()], true),
                    None => (spec.default.into_iter().map(str::to_owned).collect(), false),
                },
                FlagKind::Value | FlagKind::Repeated => (
                    matches
                        .get_many::<String>(spec.name)
                        .map(|v| v.cloned().collect())
                        .unwrap_or_default(),
                    matches.value_source(spec.name) == Some(ValueSource::CommandLine),
                ),
            };
            values.insert(
                spec.name,
                FlagValue {
                    values: flag_values,
                    explicit,
                },
            );
        }
        Self { values }
    }

    fn entry(&self, name: &str) -> &FlagValue {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("flag {name} is not declared by any collector"))
    }

    pub fn bool(&self, name: &str) -> bool {
        self.entry(name).values.last().is_some_and(|v| v == "true")
    }

    /// The value of a single-valued flag; `None` when it has no default and was not given.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.entry(name).values.last().map(String::as_str)
    }

    pub fn strings(&self, name: &str) -> &[String] {
        &self.entry(name).values
    }

    /// Whether the flag was given on the command line.
    pub fn is_explicit(&self, name: &str) -> bool {
        self.entry(name).explicit
    }

    /// The flag compiled as a regular expression (unanchored, as Go's `MatchString`).
    pub fn regex(&self, name: &str) -> anyhow::Result<Option<Regex>> {
        self.string(name)
            .filter(|pattern| !pattern.is_empty())
            .map(|pattern| {
                Regex::new(pattern).with_context(|| format!("--{name}: bad regular expression"))
            })
            .transpose()
    }

    /// Names of the flags given on the command line among `specs`.
    pub fn explicit_among<'a>(&'a self, specs: &'a [FlagSpec]) -> impl Iterator<Item = &'a str> {
        specs
            .iter()
            .filter(|spec| self.values.get(spec.name).is_some_and(|v| v.explicit))
            .map(|spec| spec.name)
    }
}

/// node_exporter's device filter: an exclude pattern or an include pattern, never both.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    exclude: Option<Regex>,
    include: Option<Regex>,
}

impl DeviceFilter {
    /// Builds the filter from `--<exclude>` / `--<include>` as upstream does: the deprecated
    /// `--<deprecated_exclude>` replaces a defaulted exclude, an include replaces the default
    /// exclude, and an include beside an explicit exclude is an error.
    pub fn from_flags(
        flags: &CollectorFlags,
        exclude: &str,
        deprecated_exclude: &str,
        include: &str,
    ) -> anyhow::Result<Self> {
        let mut exclude_pattern = flags.regex(exclude)?;
        if let Some(old) = flags.regex(deprecated_exclude)? {
            if flags.is_explicit(exclude) {
                anyhow::bail!("--{deprecated_exclude} and --{exclude} are mutually exclusive");
            }
            tracing::warn!(
                "--{deprecated_exclude} is DEPRECATED and will be removed in 2.0.0, use --{exclude}"
            );
            exclude_pattern = Some(old);
        }
        let include_pattern = flags.regex(include)?;
        if include_pattern.is_some() {
            if flags.is_explicit(exclude) || flags.is_explicit(deprecated_exclude) {
                anyhow::bail!("--{exclude} and --{include} are mutually exclusive");
            }
            exclude_pattern = None;
        }
        Ok(Self::new(exclude_pattern, include_pattern))
    }

    pub fn new(exclude: Option<Regex>, include: Option<Regex>) -> Self {
        Self { exclude, include }
    }

    pub fn ignored(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|re| re.is_match(name))
            || self.include.as_ref().is_some_and(|re| !re.is_match(name))
    }
}
