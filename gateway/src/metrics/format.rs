//! The two text formats `/metrics` speaks: OpenMetrics 1.0.0 (what the registry encodes) for
//! scrapers that ask for it, and Prometheus text 0.0.4 for everyone else (older Prometheus,
//! `curl`, parsers that only know 0.0.4), converted line by line from the OpenMetrics text.

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`, ending in `# EOF`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Prometheus,
}

impl Format {
    /// The format to answer a request's `Accept` header with: OpenMetrics when the caller asks
    /// for it (version 1.0.0, 0.0.1 or none) at least as strongly as for plain text; otherwise,
    /// including without `Accept` and for `*/*`, Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let (mut q, mut version) = (1.0_f32, None);
            for param in parts {
                match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some((k, v)) if k.eq_ignore_ascii_case("q") => q = v.parse().unwrap_or(0.0),
                    Some((k, v)) if k.eq_ignore_ascii_case("version") => version = Some(v),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
                {
                    openmetrics = openmetrics.max(q);
                }
                "text/plain" if matches!(version, None | Some("0.0.4")) => text = text.max(q),
                "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Converts OpenMetrics text to Prometheus text 0.0.4: no `# EOF` or `# UNIT` lines, no
/// `_created` samples and no exemplars; a counter's `# HELP` and `# TYPE` name its `_total`
/// samples (0.0.4 names a family by its samples); `info` becomes a `gauge` named `…_info`,
/// `unknown` (and the other types 0.0.4 lacks) becomes `untyped`.
pub fn to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family being written and its type, from its `# TYPE` line.
    let mut family = String::new();
    let mut kind = "";
    // `# HELP` comes before `# TYPE` and is renamed with it.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), None);
            help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, prom_kind) = match om_kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", om_kind),
                _ => ("", "untyped"),
            };
            family = format!("{name}{suffix}");
            kind = om_kind;
            let help_name = help.and_then(|h| h.split_once(' ')).map(|(n, _)| n);
            if help_name == Some(name) {
                flush_help(&mut out, help.take(), Some(&family));
            } else {
                flush_help(&mut out, help.take(), None);
            }
            out.push_str("# TYPE ");
            out.push_str(&family);
            out.push(' ');
            out.push_str(prom_kind);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else if line.starts_with('#') || line.is_empty() {
            flush_help(&mut out, help.take(), None);
            out.push_str(line);
            out.push('\n');
        } else {
            flush_help(&mut out, help.take(), None);
            let (name, rest) = split_sample(line);
            let base = family.strip_suffix("_total").unwrap_or(&family);
            let created = matches!(kind, "counter" | "histogram" | "summary")
                && name.strip_suffix("_created") == Some(base);
            if !created {
                out.push_str(name);
                out.push_str(strip_exemplar(rest));
                out.push('\n');
            }
        }
    }
    flush_help(&mut out, help, None);
    out
}

/// Writes a pending `# HELP name text` line, under `rename` when given.
fn flush_help(out: &mut String, help: Option<&str>, rename: Option<&str>) {
    let Some(help) = help else { return };
    out.push_str("# HELP ");
    match (rename, help.split_once(' ')) {
        (Some(name), Some((_, text))) => {
            out.push_str(name);
            out.push(' ');
            out.push_str(text);
        }
        (Some(name), None) => out.push_str(name),
        (None, _) => out.push_str(help),
    }
    out.push('\n');
}

/// Splits a sample line into its metric name and the rest (labels, value, timestamp, exemplar).
fn split_sample(line: &str) -> (&str, &str) {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    line.split_at(end)
}

/// Drops an exemplar (` # {…} value`) after a sample's value; a ` # ` inside quoted label
/// values is not one.
fn strip_exemplar(rest: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    let mut in_labels = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if in_labels => quoted = !quoted,
            '{' if !quoted && !in_labels && i == 0 => in_labels = true,
            '}' if !quoted && in_labels => in_labels = false,
            '#' if !quoted && !in_labels && rest[..i].ends_with(' ') => {
                return rest[..i].trim_end();
            }
            _ => {}
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_chosen_only_when_asked_for_at_least_as_strongly_as_text() {
        // What Prometheus 2.x and 3.x send.
        for accept in [
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            "application/openmetrics-text",
            "Application/OpenMetrics-Text; Version=1.0.0",
        ] {
            assert_eq!(
                Format::negotiate(Some(accept)),
                Format::OpenMetrics,
                "{accept}"
            );
        }
        for accept in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"),
            Some("application/openmetrics-text;q=0"),
            Some("application/openmetrics-text;version=9.9.9"),
            Some("application/json"),
        ] {
            assert_eq!(Format::negotiate(accept), Format::Prometheus, "{accept:?}");
        }
    }

    #[test]
    fn prometheus_text_names_counter_families_by_their_total_samples_and_drops_openmetrics_only_lines()
     {
        let openmetrics = "# HELP request Requests forwarded.\n\
            # TYPE request counter\n\
            request_total{authority=\"a:80\"} 3\n\
            request_created{authority=\"a:80\"} 1700000000.5\n\
            # HELP process_cpu_seconds CPU.\n\
            # TYPE process_cpu_seconds counter\n\
            # UNIT process_cpu_seconds seconds\n\
            process_cpu_seconds_total 1.5 # {trace_id=\"x\"} 1.0\n\
            # HELP open Open now.\n\
            # TYPE open gauge\n\
            open{peer=\"a # b\"} 2\n\
            # HELP latency_ms Latency.\n\
            # TYPE latency_ms histogram\n\
            latency_ms_sum 4.0\n\
            latency_ms_count 2\n\
            latency_ms_bucket{le=\"1.0\"} 1\n\
            latency_ms_bucket{le=\"+Inf\"} 2 # {id=\"1\"} 3.0 1700000000.0\n\
            latency_ms_created 1700000000.0\n\
            # HELP build Build.\n\
            # TYPE build info\n\
            build_info{version=\"1\"} 1\n\
            # TYPE mystery unknown\n\
            mystery 7\n\
            # EOF\n";
        let expected = "# HELP request_total Requests forwarded.\n\
            # TYPE request_total counter\n\
            request_total{authority=\"a:80\"} 3\n\
            # HELP process_cpu_seconds_total CPU.\n\
            # TYPE process_cpu_seconds_total counter\n\
            process_cpu_seconds_total 1.5\n\
            # HELP open Open now.\n\
            # TYPE open gauge\n\
            open{peer=\"a # b\"} 2\n\
            # HELP latency_ms Latency.\n\
            # TYPE latency_ms histogram\n\
            latency_ms_sum 4.0\n\
            latency_ms_count 2\n\
            latency_ms_bucket{le=\"1.0\"} 1\n\
            latency_ms_bucket{le=\"+Inf\"} 2\n\
            # HELP build_info Build.\n\
            # TYPE build_info gauge\n\
            build_info{version=\"1\"} 1\n\
            # TYPE mystery untyped\n\
            mystery 7\n";
        assert_eq!(to_prometheus(openmetrics), expected);
    }

    #[test]
    fn a_gauge_named_like_a_created_sample_is_kept() {
        let text = "# TYPE things_created gauge\nthings_created 4\n# EOF\n";
        assert_eq!(
            to_prometheus(text),
            "# TYPE things_created gauge\nthings_created 4\n"
        );
    }
}
