//! How a key's value is written: [`Value`] parses it from YAML or from an environment variable /
//! flag (text) and writes it back as YAML, and names the expected form for error messages.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_norway::{Mapping, Value as Yaml};

use super::LogFormat;
use crate::access_log::{Sink, UriDetail};
use crate::limit::Rule;
use crate::upstream::failover::{self, Fallback};
use crate::upstream::split::{self, Weighted};
use crate::upstream::{Address, Preference};

/// A configuration value's type.
pub trait Value: Sized {
    /// The expected form, for messages: `expected <FORM>`.
    const FORM: &'static str;
    /// Whether its flag may be given several times (values accumulate).
    const REPEATABLE: bool = false;

    /// Parses an environment variable's or a flag's text.
    ///
    /// # Errors
    /// A short reason; the caller names the source and the form.
    fn from_text(text: &str) -> Result<Self, String>;

    /// Parses a YAML value.
    ///
    /// # Errors
    /// A short reason, as [`Value::from_text`].
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        match value {
            Yaml::String(text) => Self::from_text(&text),
            Yaml::Number(n) => Self::from_text(&n.to_string()),
            Yaml::Bool(b) => Self::from_text(&b.to_string()),
            other => Err(format!("got {}", show(&other))),
        }
    }

    /// The value as YAML (what `run --check` prints).
    fn to_yaml(&self) -> Yaml;
}

/// A YAML value on one line, for messages.
pub(super) fn show(value: &Yaml) -> String {
    serde_norway::to_string(value)
        .unwrap_or_default()
        .trim()
        .replace('\n', " ")
}

fn parsed<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.trim()
        .parse()
        .map_err(|e: T::Err| format!("got {text:?} ({e})"))
}

impl Value for String {
    const FORM: &'static str = "text";
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.clone())
    }
}

impl Value for PathBuf {
    const FORM: &'static str = "a file path";
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("got an empty path".to_owned());
        }
        Ok(PathBuf::from(text))
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.display().to_string())
    }
}

impl Value for SocketAddr {
    const FORM: &'static str = "an address such as 0.0.0.0:4143 or [::]:4143";
    fn from_text(text: &str) -> Result<Self, String> {
        parsed(text)
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.to_string())
    }
}

impl Value for bool {
    const FORM: &'static str = "true or false";
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            _ => Err(format!("got {text:?}")),
        }
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Bool(*self)
    }
}

impl Value for usize {
    const FORM: &'static str = "a whole number";
    fn from_text(text: &str) -> Result<Self, String> {
        parsed(text)
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Number((*self as u64).into())
    }
}

impl Value for u32 {
    const FORM: &'static str = "a whole number";
    fn from_text(text: &str) -> Result<Self, String> {
        parsed(text)
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Number(u64::from(*self).into())
    }
}

/// A share: a number from 0 to 1, or a percentage (`1%`).
impl Value for f64 {
    const FORM: &'static str = "a number from 0 to 1, or a percentage such as 1%";
    fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let value = match text.strip_suffix('%') {
            Some(percent) => parsed::<f64>(percent)? / 100.0,
            None => parsed(text)?,
        };
        if !(0.0..=1.0).contains(&value) {
            return Err(format!(
                "got {text:?} (not between 0 and 1, or 0% and 100%)"
            ));
        }
        Ok(value)
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        match value {
            Yaml::Number(n) => Self::from_text(&n.to_string()),
            Yaml::String(s) => Self::from_text(&s),
            other => Err(format!("got {}", show(&other))),
        }
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Number((*self).into())
    }
}

impl Value for Duration {
    const FORM: &'static str = "a duration such as 500ms, 10s, 5m or 24h";
    fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // A bare number is taken as seconds.
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Duration::from_secs(seconds));
        }
        humantime::parse_duration(text).map_err(|e| format!("got {text:?} ({e})"))
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(humantime::format_duration(*self).to_string())
    }
}

impl Value for LogFormat {
    const FORM: &'static str = "text or json";
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("got {other:?}")),
        }
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(
            match self {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .to_owned(),
        )
    }
}

impl Value for Sink {
    const FORM: &'static str = "stderr or a file path";
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.to_string())
    }
}

impl Value for UriDetail {
    const FORM: &'static str = "off, path or full";
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.as_str().to_owned())
    }
}

impl<T: Value> Value for Option<T> {
    const FORM: &'static str = T::FORM;
    fn from_text(text: &str) -> Result<Self, String> {
        T::from_text(text).map(Some)
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        match value {
            Yaml::Null => Ok(None),
            value => T::from_yaml(value).map(Some),
        }
    }
    fn to_yaml(&self) -> Yaml {
        self.as_ref().map_or(Yaml::Null, Value::to_yaml)
    }
}

/// Lists: comma-separated in text, a sequence in YAML.
impl<T: Value> Value for Vec<T> {
    const FORM: &'static str = "a comma-separated list (in YAML, a list)";
    fn from_text(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| T::from_text(item).map_err(|e| format!("each item {}, {e}", T::FORM)))
            .collect()
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        match value {
            Yaml::Sequence(items) => items
                .into_iter()
                .map(|item| T::from_yaml(item).map_err(|e| format!("each item {}, {e}", T::FORM)))
                .collect(),
            Yaml::String(text) => Self::from_text(&text),
            other => Err(format!("got {}", show(&other))),
        }
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Sequence(self.iter().map(Value::to_yaml).collect())
    }
}

/// `NAME:PORT=VALUE` pairs, comma-separated (a name may repeat where values accumulate).
fn pairs(text: &str) -> Result<Vec<(&str, &str)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim(), value.trim())),
            _ => Err(format!("got {pair:?}")),
        })
        .collect()
}

fn mapping(value: Yaml) -> Result<Vec<(String, Yaml)>, String> {
    match value {
        Yaml::Null => Ok(Vec::new()),
        Yaml::Mapping(map) => map
            .into_iter()
            .map(|(name, value)| match name {
                Yaml::String(name) => Ok((name, value)),
                other => Err(format!("got the key {}", show(&other))),
            })
            .collect(),
        other => Err(format!("got {}", show(&other))),
    }
}

/// Static endpoints: `NAME:PORT` → endpoints.
impl Value for BTreeMap<String, Vec<Address>> {
    const FORM: &'static str = "NAME:PORT=IP:PORT[;identity=ID][;protocol=h2|http1|opaque][;opaque_port=PORT]\
         [;weight=N][;authority_override=NAME:PORT] (in YAML, a map of NAME:PORT to a list of \
         IP:PORT strings or {addr, identity, protocol, opaque_port, weight, authority_override})";
    const REPEATABLE: bool = true;
    fn from_text(text: &str) -> Result<Self, String> {
        let mut map = Self::new();
        for (name, addr) in pairs(text)? {
            map.entry(name.to_owned())
                .or_default()
                .push(addr.parse::<Address>()?);
        }
        Ok(map)
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        mapping(value)?
            .into_iter()
            .map(|(name, list)| {
                let list = match list {
                    Yaml::Sequence(list) => list,
                    Yaml::Null => Vec::new(),
                    other => return Err(format!("{name:?}: got {}", show(&other))),
                };
                list.into_iter()
                    .map(address_of_yaml)
                    .collect::<Result<Vec<_>, _>>()
                    .map(|addrs| (name.clone(), addrs))
                    .map_err(|e| format!("{name:?}: {e}"))
            })
            .collect()
    }
    fn to_yaml(&self) -> Yaml {
        let mut map = Mapping::new();
        for (name, addrs) in self {
            let list = addrs.iter().map(address_to_yaml).collect();
            map.insert(Yaml::String(name.clone()), Yaml::Sequence(list));
        }
        Yaml::Mapping(map)
    }
}

/// An endpoint in YAML: the text form as a string, or a map with `addr` and the meshed fields.
fn address_of_yaml(value: Yaml) -> Result<Address, String> {
    match value {
        Yaml::String(text) => text.parse::<Address>(),
        Yaml::Mapping(map) => {
            let mut addr = None;
            let mut fields = Vec::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::String(key) => key,
                    other => return Err(format!("got the key {}", show(&other))),
                };
                let value = match value {
                    Yaml::String(text) => text,
                    Yaml::Number(n) => n.to_string(),
                    other => return Err(format!("{key}: got {}", show(&other))),
                };
                if key == "addr" {
                    addr = Some(value);
                } else {
                    fields.push((key, value));
                }
            }
            let addr = addr.ok_or("an endpoint map needs addr: IP:PORT")?;
            let mut address = addr.parse::<Address>()?;
            for (key, value) in fields {
                address.set(&key, &value)?;
            }
            address.check()?;
            Ok(address)
        }
        other => Err(format!("got {}", show(&other))),
    }
}

fn address_to_yaml(address: &Address) -> Yaml {
    if address.is_plain() {
        return Yaml::String(address.addr.to_string());
    }
    let mut map = Mapping::new();
    let mut put = |key: &str, value: Yaml| {
        map.insert(Yaml::String(key.to_owned()), value);
    };
    put("addr", Yaml::String(address.addr.to_string()));
    if let Some(identity) = &address.identity {
        put("identity", Yaml::String(identity.to_string()));
    }
    if let Some(hint) = address.hint {
        put("protocol", Yaml::String(hint.as_str().to_owned()));
    }
    if let Some(port) = address.opaque_port {
        put("opaque_port", Yaml::Number(port.into()));
    }
    if address.weight != 1 {
        put("weight", Yaml::Number(address.weight.into()));
    }
    if let Some(target) = &address.authority_override {
        put("authority_override", Yaml::String(target.to_string()));
    }
    Yaml::Mapping(map)
}

/// A value set per target (`NAME:PORT` → value): `response_timeouts`, `upstream_protocol`.
pub trait PerTarget: Value {
    /// The map's expected form, for messages.
    const PAIRS: &'static str;
}

impl PerTarget for Duration {
    const PAIRS: &'static str =
        "NAME:PORT=DURATION pairs (in YAML, a map of NAME:PORT to a duration)";
}

impl PerTarget for Vec<Weighted> {
    const PAIRS: &'static str = "NAME:PORT=TO:PORT*WEIGHT+TO:PORT*WEIGHT pairs (in YAML, a map of \
        NAME:PORT to a list of {to: NAME:PORT, weight: N})";
}

/// Items of a `+`-joined list (a split's backends, a target's fallbacks), empty ones skipped.
fn plus_list<T: std::str::FromStr<Err = String>>(text: &str) -> Result<Vec<T>, String> {
    text.split('+')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::parse)
        .collect()
}

/// A split's backends.
impl Value for Vec<Weighted> {
    const FORM: &'static str = "TO:PORT*WEIGHT+TO:PORT*WEIGHT";
    fn from_text(text: &str) -> Result<Self, String> {
        let split = plus_list(text)?;
        split::check(&split)?;
        Ok(split)
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        let Yaml::Sequence(list) = value else {
            return Err(format!("got {}", show(&value)));
        };
        let split = list
            .into_iter()
            .map(|item| match item {
                Yaml::String(text) => text.parse(),
                Yaml::Mapping(map) => {
                    let mut to = None;
                    let mut weight = 1u32;
                    for (key, value) in map {
                        match (key.as_str(), value) {
                            (Some("to"), Yaml::String(t)) => to = Some(t),
                            (Some("weight"), Yaml::Number(n)) => {
                                weight = n
                                    .as_u64()
                                    .and_then(|n| u32::try_from(n).ok())
                                    .ok_or_else(|| format!("weight {n} is not a whole number"))?;
                            }
                            (key, value) => {
                                return Err(format!("{key:?}: got {} (to, weight)", show(&value)));
                            }
                        }
                    }
                    let to = to.ok_or("a split backend needs to: NAME:PORT")?;
                    format!("{to}*{weight}").parse()
                }
                other => Err(format!("got {}", show(&other))),
            })
            .collect::<Result<Vec<Weighted>, String>>()?;
        split::check(&split)?;
        Ok(split)
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Sequence(
            self.iter()
                .map(|b| {
                    let mut map = Mapping::new();
                    map.insert(
                        Yaml::String("to".to_owned()),
                        Yaml::String(b.to.to_string()),
                    );
                    map.insert(
                        Yaml::String("weight".to_owned()),
                        Yaml::Number(b.weight.into()),
                    );
                    Yaml::Mapping(map)
                })
                .collect(),
        )
    }
}

impl PerTarget for Vec<Fallback> {
    const PAIRS: &'static str = "NAME:PORT=FALLBACK+FALLBACK pairs, a fallback being NAME:PORT or \
        gateway=IP:PORT;identity=NAME[;target=NAME:PORT] (in YAML, a map of NAME:PORT to a list \
        of those or of {to: NAME:PORT} / {gateway, identity, target} maps)";
}

/// A target's ordered fallbacks.
impl Value for Vec<Fallback> {
    const FORM: &'static str = "FALLBACK+FALLBACK";
    fn from_text(text: &str) -> Result<Self, String> {
        let list = plus_list(text)?;
        failover::check(None, &list)?;
        Ok(list)
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        let Yaml::Sequence(items) = value else {
            return Err(format!("got {}", show(&value)));
        };
        let list = items
            .into_iter()
            .map(|item| match item {
                Yaml::String(text) => text.parse(),
                Yaml::Mapping(map) => {
                    let mut fields = Vec::new();
                    for (key, value) in map {
                        match (key.as_str(), value) {
                            (
                                Some(key @ ("to" | "gateway" | "identity" | "target")),
                                Yaml::String(v),
                            ) => {
                                fields.push((key.to_owned(), v));
                            }
                            (key, value) => {
                                return Err(format!(
                                    "{key:?}: got {} (to, or gateway, identity, target)",
                                    show(&value)
                                ));
                            }
                        }
                    }
                    match fields.as_slice() {
                        [(key, to)] if key == "to" => to.parse(),
                        _ if fields.iter().any(|(k, _)| k == "to") => {
                            Err("a fallback is either {to} or {gateway, identity, target}"
                                .to_owned())
                        }
                        _ => {
                            // `gateway` first, as the text form has it.
                            fields.sort_by_key(|(k, _)| k != "gateway");
                            fields
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(";")
                                .parse()
                        }
                    }
                }
                other => Err(format!("got {}", show(&other))),
            })
            .collect::<Result<Vec<Fallback>, String>>()?;
        failover::check(None, &list)?;
        Ok(list)
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::Sequence(
            self.iter()
                .map(|f| {
                    let mut map = Mapping::new();
                    let mut put = |k: &str, v: String| {
                        map.insert(Yaml::String(k.to_owned()), Yaml::String(v));
                    };
                    match f {
                        Fallback::Local(to) => put("to", to.to_string()),
                        Fallback::Gateway {
                            addr,
                            identity,
                            target,
                        } => {
                            put("gateway", addr.to_string());
                            put("identity", identity.as_str().to_owned());
                            if let Some(target) = target {
                                put("target", target.to_string());
                            }
                        }
                    }
                    Yaml::Mapping(map)
                })
                .collect(),
        )
    }
}

/// A rate-limit rule: `CLIENT[@TARGET]=RATE[/BURST]`, or in YAML `{client, target, rate, burst}`.
impl Value for Rule {
    const FORM: &'static str = "CLIENT[@NAME:PORT]=RATE[/BURST] (CLIENT an identity or *; in YAML \
        also {client, target, rate, burst})";
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        let map = match value {
            Yaml::String(text) => return text.parse(),
            Yaml::Mapping(map) => map,
            other => return Err(format!("got {}", show(&other))),
        };
        let mut rule = Rule {
            client: None,
            target: None,
            rate: 0.0,
            burst: 0,
        };
        let mut client = None;
        for (key, value) in map {
            match (key.as_str(), value) {
                (Some("client"), Yaml::String(c)) => client = Some(c),
                (Some("target"), Yaml::String(t)) => rule.target = Some(t.to_ascii_lowercase()),
                (Some("rate"), Yaml::Number(n)) => rule.rate = n.as_f64().unwrap_or(0.0),
                (Some("burst"), Yaml::Number(n)) => {
                    rule.burst = n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                }
                (key, value) => {
                    return Err(format!(
                        "{key:?}: got {} (client, target, rate, burst)",
                        show(&value)
                    ));
                }
            }
        }
        let client = client.ok_or("a rate limit needs client: an identity or *")?;
        rule.client = (client.trim() != "*").then(|| client.trim().to_ascii_lowercase());
        if rule.burst == 0 && rule.rate > 0.0 {
            rule.burst = rule.rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        }
        rule.check()?;
        Ok(rule)
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.to_string())
    }
}

impl PerTarget for Preference {
    const PAIRS: &'static str =
        "NAME:PORT=auto|http1|http2 pairs (in YAML, a map of NAME:PORT to auto, http1 or http2)";
}

impl<V: PerTarget> Value for BTreeMap<String, V> {
    const FORM: &'static str = V::PAIRS;
    fn from_text(text: &str) -> Result<Self, String> {
        pairs(text)?
            .into_iter()
            .map(|(name, v)| Ok((name.to_owned(), V::from_text(v)?)))
            .collect()
    }
    fn from_yaml(value: Yaml) -> Result<Self, String> {
        mapping(value)?
            .into_iter()
            .map(|(name, v)| {
                V::from_yaml(v)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| format!("{name:?}: {e}"))
            })
            .collect()
    }
    fn to_yaml(&self) -> Yaml {
        let mut out = Mapping::new();
        for (name, v) in self {
            out.insert(Yaml::String(name.clone()), v.to_yaml());
        }
        Yaml::Mapping(out)
    }
}

impl Value for Preference {
    const FORM: &'static str = "auto, http1 or http2";
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim().parse()
    }
    fn to_yaml(&self) -> Yaml {
        Yaml::String(self.as_str().to_owned())
    }
}
