//! The desired-state file of `import` and `publish` (YAML or JSON):
//!
//! ```yaml
//! aliases:
//!   alias/app/payments:
//!     aws-prod-use1: mrk-1234abcd12ab34cd56ef1234567890ab
//!     aws-prod-euw1: mrk-1234abcd12ab34cd56ef1234567890ab
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// alias → target → key id.
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
}

impl StateFile {
    /// JSON if it starts like JSON, else YAML (a superset, but JSON errors read better).
    pub fn parse(text: &str) -> Result<StateFile, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON desired-state file: {e}"))
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML desired-state file: {e}"))
        }
    }

    /// Reads and parses a file; errors name it.
    pub fn read(path: &Path) -> Result<StateFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        StateFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_yaml_ng::to_string(self).expect("plain maps serialize");
        format!("# aliassync desired state: alias -> target -> key id\n{body}")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain maps serialize") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_round_trip() {
        let mut f = StateFile::default();
        f.aliases.insert("alias/app/x".into(), [("t1".to_string(), "k1".to_string())].into());
        assert_eq!(StateFile::parse(&f.to_yaml()).unwrap(), f);
        assert_eq!(StateFile::parse(&f.to_json()).unwrap(), f);
        assert!(StateFile::parse("aliases: 3").is_err());
        assert!(StateFile::parse("{\"aliasez\": {}}").unwrap_err().contains("aliasez"));
    }
}
