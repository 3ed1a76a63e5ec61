//! Loading: defaults ← a YAML file ← environment ← flags, each value parsed by its key's type and
//! every problem collected with the source that set it; then [`Config::validate`].

use std::path::Path;

use serde_norway::{Mapping, Value as Yaml};

use super::value::{Value, show};
use super::{Config, EnvSource, KEYS, Overrides, Problems, key};

/// A value as it arrived: YAML from the file, text from the environment or a flag.
pub(super) enum Raw {
    /// From the YAML file.
    Yaml(Yaml),
    /// From an environment variable or a flag.
    Text(String),
}

impl Raw {
    /// Parses into the key's type; the reason names the expected form.
    pub(super) fn parse<T: Value>(self) -> Result<T, String> {
        let parsed = match self {
            Raw::Yaml(value) => T::from_yaml(value),
            Raw::Text(text) => T::from_text(&text),
        };
        parsed.map_err(|reason| format!("expected {}, {reason}", T::FORM))
    }
}

impl Config {
    /// Loads defaults ← `file` (YAML) ← environment ← `overrides`, then validates.
    ///
    /// # Errors
    /// Every problem at once: unreadable file, YAML syntax, unknown keys, bad values (named as
    /// the user wrote them, with the expected form), and the checks of [`Config::validate`].
    pub fn load(
        file: Option<&Path>,
        env: &impl EnvSource,
        overrides: &Overrides,
    ) -> Result<Config, Problems> {
        let mut config = Config::default();
        let mut problems = Vec::new();
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => config.apply_yaml(&path.display().to_string(), &text, &mut problems),
                Err(e) => problems.push(format!("config file {}: {e}", path.display())),
            }
        }
        for key in KEYS {
            if let Some((var, text)) = key
                .env()
                .into_iter()
                .find_map(|v| env.get(&v).map(|t| (v, t)))
            {
                config.apply(key.name, Raw::Text(text), &var, &mut problems);
            }
        }
        for (name, text) in overrides {
            let flag = key(name).and_then(|k| k.flag).unwrap_or(name);
            config.apply(
                name,
                Raw::Text(text.clone()),
                &format!("--{flag}"),
                &mut problems,
            );
        }
        config.finish(problems)
    }

    /// Parses YAML text alone (no environment, no flags) and validates it.
    ///
    /// # Errors
    /// Every problem, as [`Config::load`].
    pub fn from_yaml(text: &str) -> Result<Config, Problems> {
        let mut config = Config::default();
        let mut problems = Vec::new();
        config.apply_yaml("config", text, &mut problems);
        config.finish(problems)
    }

    /// The effective configuration as YAML: every key, `null` when unset; loading it gives the
    /// same configuration (except elided PEM text).
    pub fn to_yaml(&self) -> String {
        let mut map = Mapping::new();
        for key in KEYS {
            let value = match self.yaml_of(key.name) {
                Yaml::Null => Yaml::Null,
                _ if key.elided => {
                    Yaml::String(format!("<elided: set by {}>", key.env().join(" or ")))
                }
                value => value,
            };
            map.insert(Yaml::String(key.name.to_owned()), value);
        }
        serde_norway::to_string(&Yaml::Mapping(map))
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Adds the problems of [`Config::validate`] to `problems`; the config if there are none.
    fn finish(self, mut problems: Vec<String>) -> Result<Config, Problems> {
        problems.extend(self.validate().0);
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(Problems(problems))
        }
    }

    fn apply_yaml(&mut self, what: &str, text: &str, problems: &mut Vec<String>) {
        let value: Yaml = match serde_norway::from_str(text) {
            Ok(Yaml::Null) => return,
            Ok(v) => v,
            Err(e) => return problems.push(format!("{what}: {e}")),
        };
        let Yaml::Mapping(map) = value else {
            return problems.push(format!("{what}: the top level must be a mapping of keys"));
        };
        for (name, value) in map {
            match name.as_str() {
                Some(name) if key(name).is_some() => {
                    self.apply(name, Raw::Yaml(value), &format!("{what}: {name}"), problems);
                }
                _ => problems.push(format!(
                    "{what}: unknown key {} (known keys: {})",
                    show(&name),
                    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }

    /// Sets one key, recording a problem that names `source` when the value does not fit.
    fn apply(&mut self, name: &str, raw: Raw, source: &str, problems: &mut Vec<String>) {
        match self.set(name, raw) {
            Some(Ok(())) => {}
            Some(Err(reason)) => problems.push(format!("{source}: {reason}")),
            None => problems.push(format!("{source}: unknown key {name}")),
        }
    }
}
