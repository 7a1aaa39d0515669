//! Kinds of proposal warnings, for the review queue's counts and its `warning=KIND` filter.
//!
//! A proposal keeps its warnings as text (`Proposal::warnings`), written in three places:
//! field checks (`task::check_value`: `seo_description: 172 characters, at most 160`), failed
//! rules (`task::Task::recheck`: `totals_add_up: lines sum to 90.00, total is 100.00`) and the
//! look-up (`checks::Findings::look_up_warnings`: `supplier not found: …`, `duplicate of bill …`,
//! `look-up: …`). [`WarningKind::of`] reads the kind back from the text, and
//! [`WarningKind::sql_matches`] is the same reading as an SQL condition, so the store filters on
//! the stored JSON on SQLite and Postgres alike. The two are written side by side from the same
//! string tests (prefix, contains), so they agree on every text.

use super::Backend;
use super::items::Bind;

/// What a look-up failure's warning starts with.
const LOOK_UP_FAILED: &str = "look-up: ";
/// What a "supplier not found" warning starts with.
const SUPPLIER_NOT_FOUND: &str = "supplier not found: ";
/// What a duplicate bill's warning starts with.
const DUPLICATE: &str = "duplicate of bill ";

/// The four shapes of a field-check warning after `property: `, in the order they are tried.
const SHAPES: [(&str, Bound); 4] = [
    (" characters, at most ", Bound::TooLong),
    (" characters, at least ", Bound::TooShort),
    (" items, at most ", Bound::TooMany),
    (" items, at least ", Bound::TooFew),
];

/// Which bound of a field check a value missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bound {
    /// More characters than `max_chars`.
    TooLong,
    /// Fewer characters than `min_chars`.
    TooShort,
    /// More items than `max_items`.
    TooMany,
    /// Fewer items than `min_items`.
    TooFew,
}

impl Bound {
    fn key(self) -> &'static str {
        match self {
            Bound::TooLong => "too_long",
            Bound::TooShort => "too_short",
            Bound::TooMany => "too_many",
            Bound::TooFew => "too_few",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Bound::TooLong => "too long",
            Bound::TooShort => "too short",
            Bound::TooMany => "too many items",
            Bound::TooFew => "too few items",
        }
    }
}

/// The kind of one warning: which check, rule or look-up raised it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WarningKind {
    /// A field check on a task property (`seo_description` too long).
    Check { property: String, bound: Bound },
    /// A rule of the task failed (its name).
    Rule(String),
    /// The look-up found no supplier by the proposal's name or tax number.
    SupplierNotFound,
    /// The look-up found a bill on the platform this one may duplicate.
    PossibleDuplicate,
    /// The look-up itself failed.
    LookUpFailed,
    /// Any other text.
    Other,
}

impl WarningKind {
    /// The kind of warning `text`.
    pub fn of(text: &str) -> WarningKind {
        if text.starts_with(LOOK_UP_FAILED) {
            return WarningKind::LookUpFailed;
        }
        if text.starts_with(SUPPLIER_NOT_FOUND) {
            return WarningKind::SupplierNotFound;
        }
        if text.starts_with(DUPLICATE) {
            return WarningKind::PossibleDuplicate;
        }
        let Some((head, rest)) = text.split_once(": ") else { return WarningKind::Other };
        // A field check's text has one `: `, after the property; a rule's message may have more.
        if !rest.contains(": ")
            && let Some((_, bound)) = SHAPES.iter().find(|(shape, _)| rest.contains(shape))
        {
            return WarningKind::Check { property: head.to_owned(), bound: *bound };
        }
        WarningKind::Rule(head.to_owned())
    }

    /// The kind as a query parameter value: `too_long:seo_description`, `rule:totals_add_up`,
    /// `supplier_not_found`, `duplicate`, `look_up_failed`, `other`.
    pub fn key(&self) -> String {
        match self {
            WarningKind::Check { property, bound } => format!("{}:{property}", bound.key()),
            WarningKind::Rule(name) => format!("rule:{name}"),
            WarningKind::SupplierNotFound => "supplier_not_found".into(),
            WarningKind::PossibleDuplicate => "duplicate".into(),
            WarningKind::LookUpFailed => "look_up_failed".into(),
            WarningKind::Other => "other".into(),
        }
    }

    /// The kind in words, with `name` giving a task property or rule its name for people
    /// (`seo_description` → `Meta description`).
    pub fn label(&self, name: impl Fn(&str) -> String) -> String {
        match self {
            WarningKind::Check { property, bound } => format!("{} {}", name(property), bound.words()),
            WarningKind::Rule(rule) => format!("rule {} failed", rule.replace('_', " ")),
            WarningKind::SupplierNotFound => "supplier not found".into(),
            WarningKind::PossibleDuplicate => "possible duplicate".into(),
            WarningKind::LookUpFailed => "look-up failed".into(),
            WarningKind::Other => "other warnings".into(),
        }
    }

    /// An SQL condition that holds exactly when the text in `column` is a warning of this kind
    /// (what [`WarningKind::of`] says), its values pushed onto `binds`. Comparisons are
    /// case-sensitive on both backends (SQLite's `LIKE` is not, so none is used).
    pub(super) fn sql_matches(&self, backend: Backend, column: &str, binds: &mut Vec<Bind>) -> String {
        // Only what the condition uses is bound: Postgres refuses values a statement never reads.
        let starts = |text: &str, prefix: &str, binds: &mut Vec<Bind>| {
            binds.push(Bind::Text(prefix.to_owned()));
            format!("substr({text}, 1, {}) = ${}", prefix.chars().count(), binds.len())
        };
        let contains = |text: &str, needle: &str, binds: &mut Vec<Bind>| {
            binds.push(Bind::Text(needle.to_owned()));
            match backend {
                Backend::Sqlite => format!("instr({text}, ${}) > 0", binds.len()),
                Backend::Postgres => format!("strpos({text}, CAST(${} AS TEXT)) > 0", binds.len()),
            }
        };
        let none_of_the_look_up = |binds: &mut Vec<Bind>| {
            let look_up = starts(column, LOOK_UP_FAILED, binds);
            let supplier = starts(column, SUPPLIER_NOT_FOUND, binds);
            let duplicate = starts(column, DUPLICATE, binds);
            format!("NOT ({look_up}) AND NOT ({supplier}) AND NOT ({duplicate})")
        };
        // A check's property or a rule's name is what comes before the first `: `, so a name
        // holding `: ` itself is never a kind that [`WarningKind::of`] gives.
        let head_of = |name: &str| (!name.contains(": ")).then(|| format!("{name}: "));
        match self {
            WarningKind::LookUpFailed => starts(column, LOOK_UP_FAILED, binds),
            WarningKind::SupplierNotFound => starts(column, SUPPLIER_NOT_FOUND, binds),
            WarningKind::PossibleDuplicate => starts(column, DUPLICATE, binds),
            WarningKind::Check { property, bound } => {
                let Some(head) = head_of(property) else { return "1 = 0".into() };
                let rest = format!("substr({column}, {})", head.chars().count() + 1);
                let mut cond = none_of_the_look_up(binds);
                cond.push_str(&format!(" AND {}", starts(column, &head, binds)));
                cond.push_str(&format!(" AND NOT ({})", contains(&rest, ": ", binds)));
                for (shape, b) in SHAPES {
                    let has = contains(&rest, shape, binds);
                    if b == *bound {
                        cond.push_str(&format!(" AND {has}"));
                        break;
                    }
                    cond.push_str(&format!(" AND NOT ({has})"));
                }
                cond
            }
            WarningKind::Rule(name) => {
                let Some(head) = head_of(name) else { return "1 = 0".into() };
                let rest = format!("substr({column}, {})", head.chars().count() + 1);
                let mut cond = none_of_the_look_up(binds);
                cond.push_str(&format!(" AND {}", starts(column, &head, binds)));
                // Not a field check's text: a second `: `, or none of the check shapes.
                let second = contains(&rest, ": ", binds);
                let shaped: Vec<String> = SHAPES.iter().map(|(shape, _)| contains(&rest, shape, binds)).collect();
                cond.push_str(&format!(" AND ({second} OR NOT ({}))", shaped.join(" OR ")));
                cond
            }
            WarningKind::Other => {
                let cond = none_of_the_look_up(binds);
                format!("{cond} AND NOT ({})", contains(column, ": ", binds))
            }
        }
    }
}

impl std::str::FromStr for WarningKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let named = |name: &str| -> std::result::Result<String, String> {
            if name.trim().is_empty() {
                Err(format!("warning kind {s:?}: the name after the colon is missing"))
            } else {
                Ok(name.to_owned())
            }
        };
        let kind = match s.split_once(':') {
            Some(("rule", name)) => WarningKind::Rule(named(name)?),
            Some((bound, property)) => {
                let bound = [Bound::TooLong, Bound::TooShort, Bound::TooMany, Bound::TooFew]
                    .into_iter()
                    .find(|b| b.key() == bound)
                    .ok_or_else(|| usage(s))?;
                WarningKind::Check { property: named(property)?, bound }
            }
            None => match s {
                "supplier_not_found" => WarningKind::SupplierNotFound,
                "duplicate" => WarningKind::PossibleDuplicate,
                "look_up_failed" => WarningKind::LookUpFailed,
                "other" => WarningKind::Other,
                _ => return Err(usage(s)),
            },
        };
        Ok(kind)
    }
}

fn usage(s: &str) -> String {
    format!(
        "warning kind {s:?}: expected too_long:PROPERTY, too_short:PROPERTY, too_many:PROPERTY, \
         too_few:PROPERTY, rule:NAME, supplier_not_found, duplicate, look_up_failed or other"
    )
}

impl std::fmt::Display for WarningKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// How many items of a queue carry a warning of one kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KindCount {
    /// The kind's key, as the `warning` filter takes it.
    pub kind: String,
    pub count: i64,
    #[serde(skip)]
    pub warning_kind: WarningKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(property: &str, bound: Bound) -> WarningKind {
        WarningKind::Check { property: property.into(), bound }
    }

    #[test]
    fn warnings_read_back_as_their_kind() {
        let cases = [
            ("seo_description: 172 characters, at most 160", check("seo_description", Bound::TooLong)),
            ("seo_description: 52 characters, at least 120", check("seo_description", Bound::TooShort)),
            ("tags: 14 items, at most 8", check("tags", Bound::TooMany)),
            ("tags: 1 items, at least 3", check("tags", Bound::TooFew)),
            (
                "is_an_invoice: document_type is \"credit_note\", expected \"invoice\"",
                WarningKind::Rule("is_an_invoice".into()),
            ),
            // A rule whose message reads like a check, but holds a second `: `, is still the rule.
            ("totals: lines: 3 items, at most 2", WarningKind::Rule("totals".into())),
            ("supplier not found: \"Acme Ltd\" (approve to create a new supplier)", WarningKind::SupplierNotFound),
            ("duplicate of bill 17 INV-9 (AUTHORISED): same number and total", WarningKind::PossibleDuplicate),
            (
                "look-up: the platform answered 503; check the supplier and for duplicates on the platform before approving",
                WarningKind::LookUpFailed,
            ),
            ("something odd", WarningKind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(WarningKind::of(text), kind, "{text}");
        }
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_refused_with_the_choices() {
        for kind in [
            check("seo_description", Bound::TooLong),
            check("seo_description", Bound::TooShort),
            check("tags", Bound::TooMany),
            check("tags", Bound::TooFew),
            WarningKind::Rule("sum_matches".into()),
            WarningKind::SupplierNotFound,
            WarningKind::PossibleDuplicate,
            WarningKind::LookUpFailed,
            WarningKind::Other,
        ] {
            assert_eq!(kind.key().parse::<WarningKind>(), Ok(kind.clone()), "{kind}");
        }
        assert_eq!("too_long:images[].alt".parse(), Ok(check("images[].alt", Bound::TooLong)));
        let err = "too_wide:seo_title".parse::<WarningKind>().unwrap_err();
        assert!(err.contains("\"too_wide:seo_title\"") && err.contains("too_long:PROPERTY"), "{err}");
        assert!("rule:".parse::<WarningKind>().unwrap_err().contains("missing"));
        assert!("anything".parse::<WarningKind>().is_err());
    }

    #[test]
    fn labels_use_the_names_people_read() {
        let label = |p: &str| if p == "seo_description" { "Meta description".to_owned() } else { p.to_owned() };
        assert_eq!(check("seo_description", Bound::TooLong).label(label), "Meta description too long");
        assert_eq!(check("tags", Bound::TooFew).label(label), "tags too few items");
        assert_eq!(WarningKind::Rule("is_an_invoice".into()).label(label), "rule is an invoice failed");
        assert_eq!(WarningKind::PossibleDuplicate.label(label), "possible duplicate");
    }

    #[test]
    fn a_name_with_its_own_separator_matches_nothing_in_sql() {
        let mut binds = Vec::new();
        let sql = WarningKind::Rule("a: b".into()).sql_matches(Backend::Sqlite, "w", &mut binds);
        assert_eq!((sql.as_str(), binds.len()), ("1 = 0", 0), "nothing bound that the statement never reads");
    }
}
