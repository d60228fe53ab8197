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
            FlagKind::Bool => {
                let off = format!("no-{}", self.name);
                vec![
                    arg.action(ArgAction::SetTrue).overrides_with(off.clone()),
                    Arg::new(off.clone())
                        .long(off)
                        .action(ArgAction::SetTrue)
                        .overrides_with(self.name)
                        .hide(true),
                ]
            }
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

/// The values of every collector flag after parsing, defaults applied.
#[derive(Clone, Debug, Default)]
pub struct CollectorFlags {
    values: HashMap<&'static str, FlagValue>,
}

#[derive(Clone, Debug)]
struct FlagValue {
    spec: FlagSpec,
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
                FlagKind::Bool => {
                    let off = format!("no-{}", spec.name);
                    let given = |id: &str| {
                        matches.value_source(id) == Some(ValueSource::CommandLine)
                            && matches.get_flag(id)
                    };
                    if given(spec.name) {
                        (vec!["true".to_owned()], true)
                    } else if given(&off) {
                        (vec!["false".to_owned()], true)
                    } else {
                        (spec.default.into_iter().map(str::to_owned).collect(), false)
                    }
                }
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
                    spec: *spec,
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

    /// The spec behind `name`, for messages.
    pub fn spec(&self, name: &str) -> FlagSpec {
        self.entry(name).spec
    }
}

/// node_exporter's device filter: an exclude pattern or an include pattern, never both.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    exclude: Option<Regex>,
    include: Option<Regex>,
}

impl DeviceFilter {
    /// Builds the filter from `--<prefix>-exclude` / `--<prefix>-include`, where an explicit
    /// include replaces the default exclude, as upstream does.
    pub fn from_flags(
        flags: &CollectorFlags,
        exclude: &str,
        include: &str,
    ) -> anyhow::Result<Self> {
        let include_pattern = flags.regex(include)?;
        if include_pattern.is_some() {
            if flags.is_explicit(exclude) {
                anyhow::bail!("--{exclude} and --{include} are mutually exclusive");
            }
            return Ok(Self {
                exclude: None,
                include: include_pattern,
            });
        }
        Ok(Self {
            exclude: flags.regex(exclude)?,
            include: None,
        })
    }

    pub fn new(exclude: Option<Regex>, include: Option<Regex>) -> Self {
        Self { exclude, include }
    }

    pub fn ignored(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|re| re.is_match(name))
            || self.include.as_ref().is_some_and(|re| !re.is_match(name))
    }
}
