//! Who may do what: four roles, each allowed everything the one before it is.
//!
//! - `viewer` looks (runs, queue, items, history, reports);
//! - `reviewer` also approves, rejects, edits and regenerates proposals;
//! - `operator` also releases samples, resumes runs, reverts writes and starts runs;
//! - `admin` also manages accounts and API tokens.
//!
//! A refused action is a [`Refusal`]: the server answers it with 403 and its text, which names the
//! role the action needs and the role the caller has.

use std::fmt;
use std::str::FromStr;

/// A role, ordered: a higher role may do everything a lower one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Reviewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Reviewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// "a viewer", "an operator".
    pub fn with_article(self) -> String {
        let article = if matches!(self, Role::Operator | Role::Admin) { "an" } else { "a" };
        format!("{article} {}", self.as_str())
    }

    /// Checks that `who`, holding this role, may do `action` (words for people: "revert a write").
    pub fn require(self, needed: Role, who: &str, action: &str) -> Result<(), Refusal> {
        if self.allows(needed) {
            Ok(())
        } else {
            Err(Refusal { needed, has: self, who: who.to_owned(), action: action.to_owned() })
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown role {s:?}: one of viewer, reviewer, operator, admin"))
    }
}

/// An action refused for want of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub needed: Role,
    pub has: Role,
    pub who: String,
    pub action: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs the {} role (or higher); {} is {}",
            self.action,
            self.needed,
            self.who,
            self.has.with_article()
        )
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_named() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Reviewer));
        assert!(!Role::Reviewer.allows(Role::Operator));
        assert!(!Role::Viewer.allows(Role::Reviewer));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("viewer, reviewer, operator, admin"));
    }

    #[test]
    fn a_refusal_names_the_role_needed() {
        let e = Role::Reviewer.require(Role::Operator, "ada", "revert a write").unwrap_err();
        assert_eq!(e.to_string(), "revert a write needs the operator role (or higher); ada is a reviewer");
        assert!(Role::Operator.require(Role::Operator, "bo", "release a sample").is_ok());
    }
}
