//! What xtask reads from the workspace's manifests, with no TOML parser: the member list,
//! each member's package name and its features. The manifests are this repository's own,
//! written one entry per line; anything unexpected is an error, not a guess.

use std::path::Path;

/// A file's text; the error names the file.
pub(crate) fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The workspace members' directories, as the root Cargo.toml lists them (`members = [`,
/// one quoted path per line).
pub(crate) fn members(root: &Path) -> Result<Vec<String>, String> {
    let workspace = read(&root.join("Cargo.toml"))?;
    let members: Vec<String> = workspace
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| {
            list.lines()
                .filter_map(|line| line.trim().strip_prefix('"')?.split('"').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if members.is_empty() {
        return Err("Cargo.toml: no workspace members found".into());
    }
    Ok(members)
}

/// The `[package]` name and the features (name and the list it enables, as written) of
/// one manifest's text.
pub(crate) fn package(manifest: &str) -> (Option<String>, Vec<(String, String)>) {
    let (mut name, mut features) = (None, Vec::new());
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        // Comments and anything else that is not `name = ...`.
        let is_name = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !is_name(key) {
            continue;
        }
        match section {
            "[package]" if key == "name" && name.is_none() => {
                name = Some(value.trim_matches('"').to_string());
            }
            "[features]" => features.push((key.to_string(), value.to_string())),
            _ => {}
        }
    }
    (name, features)
}

/// Every feature of every workspace member that does not bring in libmemcached, as
/// `package/feature` for `cargo --features`: all but `default` and the features named
/// `binary` or enabling something `binary` (libmemcached's transport). A build of the
/// workspace without libmemcached-sys and transport-binary, with these, resolves its
/// dependencies' features as the `--all-features` build does, so it reuses that build's
/// (and clippy's) artefacts for them.
pub(crate) fn features_without_libmemcached(root: &Path) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for member in members(root)? {
        let path = root.join(&member).join("Cargo.toml");
        let (name, features) = package(&read(&path)?);
        let name = name.ok_or_else(|| format!("{}: no [package] name", path.display()))?;
        out.extend(
            features
                .into_iter()
                .filter(|(f, enables)| {
                    f != "default" && !f.contains("binary") && !enables.contains("binary")
                })
                .map(|(f, _)| format!("{name}/{f}")),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_gives_its_name_and_features() {
        let (name, features) = package(
            "[package]\nname = \"newcache-tests\"\n\n[features]\ndefault = []\n# a comment = [not a feature]\nbinary = [\"dep:x\"]\njson = [\"newcache/json\"]\n\n[dependencies]\nname = \"not this\"\n",
        );
        assert_eq!(name.as_deref(), Some("newcache-tests"));
        let names: Vec<&str> = features.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["default", "binary", "json"]);
    }

    #[test]
    fn the_features_without_libmemcached_leave_out_binary_and_nothing_else() {
        let features = features_without_libmemcached(&crate::root()).unwrap();
        for want in [
            "newcache/text",
            "newcache/tokio",
            "newcache/pickle",
            "newcache/cli",
            "newcache-transport-text/tls",
            "newcache-tests/json",
        ] {
            assert!(features.iter().any(|f| f == want), "{want} in {features:?}");
        }
        assert!(
            !features
                .iter()
                .any(|f| f.ends_with("/binary") || f.ends_with("/default")),
            "{features:?}"
        );
        // `package/feature`, nothing else (cargo refuses the lot otherwise).
        for f in &features {
            let (package, feature) = f.split_once('/').unwrap();
            for part in [package, feature] {
                assert!(
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                    "{f}"
                );
            }
        }
    }
}
