//! Messaging's settings: table `[core.messaging]`. The ones marked *live* may be reloaded
//! while the node runs and apply from the next request; the others take a restart.

use std::time::Duration;

use im_common::{
    settings::{Reloadable, SettingsError},
    unchanged,
};
use serde::{Deserialize, Serialize};

/// How messaging checks, stores and pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The largest message body (`MessageBody` encoded), in bytes; announced to clients, and
    /// kept at least 1 KiB below the frame limit so that every entry fits a frame.
    pub max_content_bytes: u32,
    /// Entries appended in one transaction at most (group commit).
    pub max_batch: usize,
    /// Sends waiting for the committer at most; more wait for room.
    pub commit_queue: usize,
    /// Live. Messages one user may send per second over all its devices (sustained; a burst
    /// of twice as many).
    pub messages_per_second: u32,
    /// Live. Conversations per sync page at most (and the default).
    pub max_sync_page: u32,
    /// Live. Entries per history or pull page at most (and the default).
    pub max_history_page: u32,
    /// Live. A sender may edit a message for this long.
    #[serde(with = "humantime_serde")]
    pub edit_window: Duration,
    /// Live. A sender may recall or delete a message for this long (group admins always may).
    #[serde(with = "humantime_serde")]
    pub recall_window: Duration,
    /// Live. Different reaction keys one message may carry.
    pub max_reaction_keys: usize,
    /// Live. Groups larger than this get no typing or read-receipt pushes (clients ask with
    /// read_cursors).
    pub receipts_max_group: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_content_bytes: 64 * 1024,
            max_batch: 512,
            commit_queue: 8_192,
            messages_per_second: 20,
            max_sync_page: 200,
            max_history_page: 100,
            edit_window: Duration::from_secs(48 * 3600),
            recall_window: Duration::from_secs(24 * 3600),
            max_reaction_keys: 64,
            receipts_max_group: 200,
        }
    }
}

impl Settings {
    /// Refuses settings messaging cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = [
            ("messages_per_second", u64::from(self.messages_per_second)),
            ("max_sync_page", u64::from(self.max_sync_page)),
            ("max_history_page", u64::from(self.max_history_page)),
            ("max_batch", self.max_batch as u64),
            ("commit_queue", self.commit_queue as u64),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(SettingsError::new(format!(
                "core.messaging.{name} must be at least 1"
            ))),
            None => Ok(()),
        }
    }

    /// [`Self::edit_window`] in milliseconds, for comparing with entry times.
    pub(crate) fn edit_window_ms(&self) -> i64 {
        i64::try_from(self.edit_window.as_millis()).unwrap_or(i64::MAX)
    }

    /// [`Self::recall_window`] in milliseconds.
    pub(crate) fn recall_window_ms(&self) -> i64 {
        i64::try_from(self.recall_window.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Reloadable for Settings {
    fn check_reload(&self, next: &Self) -> Result<(), SettingsError> {
        unchanged!(
            self,
            next,
            "core.messaging",
            max_content_bytes,
            max_batch,
            commit_queue
        );
        next.validate()
    }
}
