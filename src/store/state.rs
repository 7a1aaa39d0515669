//! The item's life (DESIGN.md), as a type. The same table lives in the database
//! (`item_transitions`, enforced by a trigger); a test checks that the two agree.

use std::fmt;
use std::str::FromStr;

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Discovered,
    Queued,
    Enriching,
    /// In a provider batch, waiting for its result (no lease: batches take hours).
    Batched,
    Proposed,
    Edited,
    Approved,
    Rejected,
    Writing,
    Written,
    Conflict,
    WriteFailed,
    Skipped,
    Dead,
    /// A written item whose replaced values were written back by a reviewer's undo.
    Reverted,
    /// An undo was refused: the record changed upstream since our write, so nothing was written.
    RevertConflict,
    /// An undo was written and read back, and some of our write is still on the record: what the
    /// platform cannot restore through the configured credentials (WooCommerce alt text, say). What
    /// is left, and why, is on the item (`last_error` and the event).
    PartiallyReverted,
}

use ItemState::*;

impl ItemState {
    pub const ALL: [ItemState; 17] = [
        Discovered,
        Queued,
        Enriching,
        Batched,
        Proposed,
        Edited,
        Approved,
        Rejected,
        Writing,
        Written,
        Conflict,
        WriteFailed,
        Skipped,
        Dead,
        Reverted,
        RevertConflict,
        PartiallyReverted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Discovered => "discovered",
            Queued => "queued",
            Enriching => "enriching",
            Batched => "batched",
            Proposed => "proposed",
            Edited => "edited",
            Approved => "approved",
            Rejected => "rejected",
            Writing => "writing",
            Written => "written",
            Conflict => "conflict",
            WriteFailed => "write_failed",
            Skipped => "skipped",
            Dead => "dead",
            Reverted => "reverted",
            RevertConflict => "revert_conflict",
            PartiallyReverted => "partially_reverted",
        }
    }

    /// The state in plain words, as the UI and the CLI show it to people.
    pub fn plain(self) -> &'static str {
        match self {
            Discovered => "found",
            Queued => "waiting for the model",
            Enriching => "with the model",
            Batched => "in a provider batch",
            Proposed => "waiting for review",
            Edited => "edited, waiting for review",
            Approved => "approved, to be written",
            Rejected => "rejected",
            Writing => "being written",
            Written => "written",
            Conflict => "not written: changed on the platform",
            WriteFailed => "write failed",
            Skipped => "skipped",
            Dead => "failed",
            Reverted => "reverted",
            RevertConflict => "revert refused: changed on the platform",
            PartiallyReverted => "partly reverted",
        }
    }

    /// The states this one may move to.
    pub fn successors(self) -> &'static [ItemState] {
        match self {
            Discovered => &[Queued, Skipped],
            Queued => &[Enriching, Skipped, Dead],
            Enriching => &[Proposed, Queued, Skipped, Dead, Batched],
            Batched => &[Proposed, Queued, Dead],
            // A regeneration (a reviewer's note, a new answer) leaves the item waiting for review as
            // `proposed`, from either state (migration 0021).
            Proposed => &[Approved, Rejected, Edited, Proposed],
            Edited => &[Edited, Approved, Rejected, Proposed],
            Approved => &[Writing],
            Writing => &[Written, Conflict, WriteFailed, Dead],
            WriteFailed => &[Writing, Dead],
            Written => &[Reverted, PartiallyReverted, RevertConflict],
            Rejected | Conflict | Skipped | Dead | Reverted | RevertConflict | PartiallyReverted => &[],
        }
    }

    pub fn can_become(self, next: ItemState) -> bool {
        self.successors().contains(&next)
    }

    /// No way out: the item's trip is over.
    pub fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }

    /// The item's trip is over: terminal, or written (only an undo moves it on).
    pub fn is_finished(self) -> bool {
        self == Written || self.is_terminal()
    }

    /// Held under a lease while a worker does network work.
    pub fn is_leased(self) -> bool {
        matches!(self, Enriching | Writing)
    }

    /// Waiting for a human (review queue).
    pub fn awaits_review(self) -> bool {
        matches!(self, Proposed | Edited)
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown item state {s:?}"))
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Pulling candidate records; items are enriched while pages keep coming.
    Discovering,
    /// Everything is discovered; items are being enriched and written.
    Running,
    /// Nothing left that does not need a human: proposals wait in the review queue.
    AwaitingReview,
    /// Stopped claiming (budget reached, error rate, operator); resumable.
    Paused,
    Done,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Discovering,
        RunStatus::Running,
        RunStatus::AwaitingReview,
        RunStatus::Paused,
        RunStatus::Done,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Discovering => "discovering",
            RunStatus::Running => "running",
            RunStatus::AwaitingReview => "awaiting_review",
            RunStatus::Paused => "paused",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status in plain words, as the UI and the CLI show it to people.
    pub fn plain(self) -> &'static str {
        match self {
            RunStatus::Discovering => "finding records",
            RunStatus::Running => "running",
            RunStatus::AwaitingReview => "waiting for review",
            RunStatus::Paused => "paused",
            RunStatus::Done => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Still going: the scheduler does not start another run of the pipeline.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Discovering | RunStatus::Running | RunStatus::Paused)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Done | RunStatus::Failed | RunStatus::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in ItemState::ALL {
            assert_eq!(s.as_str().parse::<ItemState>().unwrap(), s);
        }
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
    }

    #[test]
    fn terminal_states_are_the_designed_ones() {
        let terminal: Vec<_> = ItemState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, vec![Rejected, Conflict, Skipped, Dead, Reverted, RevertConflict, PartiallyReverted]);
    }

    #[test]
    fn every_non_terminal_state_can_reach_a_terminal_one() {
        for start in ItemState::ALL {
            let mut seen = vec![start];
            let mut i = 0;
            while i < seen.len() {
                for &n in seen[i].successors() {
                    if !seen.contains(&n) {
                        seen.push(n);
                    }
                }
                i += 1;
            }
            assert!(seen.iter().any(|s| s.is_terminal()), "{start} cannot finish");
        }
    }
}
