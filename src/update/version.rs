//! Pure version logic: what `claude --version` printed, which registry version a channel
//! points to, and whether that is an update.

use std::collections::BTreeMap;

use semver::Version;

/// The release channels Claude Code publishes as dist-tags. A pre-release is never chosen
/// from these; any other tag (`next`, `beta`) names pre-releases on purpose.
pub const RELEASE_CHANNELS: [&str; 2] = ["latest", "stable"];

/// `claude --version` prints `2.1.197 (Claude Code)`: the version is the first word.
pub fn parse_version_output(out: &str) -> Result<Version, String> {
    let word = out.split_whitespace().next().unwrap_or("");
    if word.is_empty() {
        return Err("printed nothing".into());
    }
    let word = word.strip_prefix('v').unwrap_or(word);
    Version::parse(word).map_err(|e| {
        format!(
            "printed {:?}, which is not a semver version ({e})",
            clip(out)
        )
    })
}

/// A dist-tag name as npm allows it; anything else is a typo or hostile.
pub fn validate_channel(channel: &str) -> Result<(), String> {
    let ok = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--channel {channel:?} is not a dist-tag name (use latest or stable)"
        ))
    }
}

/// The version `channel` points to in the registry's dist-tags.
pub fn choose_target(tags: &BTreeMap<String, String>, channel: &str) -> Result<Version, String> {
    let Some(raw) = tags.get(channel) else {
        let known: Vec<&str> = tags.keys().map(String::as_str).collect();
        return Err(format!(
            "the registry has no {channel:?} dist-tag for the package (it has: {}); use --channel latest",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ));
    };
    let v = Version::parse(raw.trim()).map_err(|e| {
        format!(
            "the registry's {channel:?} dist-tag is {:?}, which is not a semver version ({e})",
            clip(raw)
        )
    })?;
    if !v.pre.is_empty() && RELEASE_CHANNELS.contains(&channel) {
        return Err(format!(
            "the registry's {channel:?} dist-tag points to the pre-release {v}; not installing a pre-release from a release channel"
        ));
    }
    Ok(v)
}

/// Semver precedence, so `2.1.10 > 2.1.9` and `2.2.0 > 2.2.0-beta.1`; build metadata is
/// ignored. Never a downgrade: an installed version newer than the channel stays.
pub fn is_update(installed: &Version, target: &Version) -> bool {
    target.cmp_precedence(installed).is_gt()
}

/// Hostile strings go into one log line: keep them short and on one line.
pub fn clip(s: &str) -> String {
    let one_line: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect();
    if s.trim().chars().count() > 80 {
        format!("{one_line}…")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn claude_version_output_is_parsed() {
        assert_eq!(
            parse_version_output("2.1.197 (Claude Code)\n").unwrap(),
            v("2.1.197")
        );
        assert_eq!(parse_version_output("v2.0.0").unwrap(), v("2.0.0"));
        assert_eq!(
            parse_version_output("2.2.0-beta.1 (Claude Code)").unwrap(),
            v("2.2.0-beta.1")
        );
    }

    #[test]
    fn non_semver_version_output_is_an_error_naming_what_was_printed() {
        let e = parse_version_output("Claude Code version two\n").unwrap_err();
        assert!(e.contains("\"Claude Code version two\""), "{e}");
        assert_eq!(parse_version_output("  \n").unwrap_err(), "printed nothing");
        assert!(parse_version_output("2.1").is_err());
    }

    #[test]
    fn semver_precedence_not_string_order() {
        assert!(is_update(&v("2.1.9"), &v("2.1.10")));
        assert!(is_update(&v("2.2.0-beta.1"), &v("2.2.0")));
        assert!(!is_update(&v("2.1.330"), &v("2.1.330")));
        assert!(!is_update(&v("2.1.330+build.1"), &v("2.1.330")));
    }

    #[test]
    fn an_installed_version_newer_than_the_channel_is_never_downgraded() {
        assert!(!is_update(&v("2.1.330"), &v("2.1.300")));
    }

    #[test]
    fn channel_picks_its_dist_tag() {
        let t = tags(&[("latest", "2.1.330"), ("stable", "2.1.300")]);
        assert_eq!(choose_target(&t, "latest").unwrap(), v("2.1.330"));
        assert_eq!(choose_target(&t, "stable").unwrap(), v("2.1.300"));
    }

    #[test]
    fn a_missing_channel_names_the_tags_that_exist() {
        let e = choose_target(&tags(&[("latest", "2.1.330")]), "stable").unwrap_err();
        assert!(
            e.contains("no \"stable\" dist-tag") && e.contains("it has: latest"),
            "{e}"
        );
    }

    #[test]
    fn prereleases_are_never_chosen_from_release_channels() {
        let t = tags(&[("latest", "2.2.0-rc.1"), ("next", "2.3.0-beta.2")]);
        let e = choose_target(&t, "latest").unwrap_err();
        assert!(e.contains("pre-release 2.2.0-rc.1"), "{e}");
        assert_eq!(choose_target(&t, "next").unwrap(), v("2.3.0-beta.2"));
    }

    #[test]
    fn a_non_semver_tag_is_an_error_not_a_crash() {
        let long = "x".repeat(500);
        let e = choose_target(&tags(&[("latest", &long)]), "latest").unwrap_err();
        assert!(e.contains("not a semver version") && e.len() < 300, "{e}");
    }

    #[test]
    fn channel_names_are_dist_tag_names() {
        assert!(validate_channel("latest").is_ok());
        assert!(validate_channel("next-2.x").is_ok());
        assert!(validate_channel("../x").is_err());
        assert!(validate_channel("").is_err());
    }
}
