//! System notices: every change of a group's membership (created, members added, removed,
//! left) is stored together with its notice, in one transaction; then a core node appends the
//! notice to the group's conversation (`im.notice`) as an entry with its own seq, and the
//! members added to a group that shows history from the join see it from that seq on.
//!
//! A notice no core node appended at once (none answered, or this node stopped first) stays
//! recorded and is asked again by [`Business::append_pending_notices`] until one does: its
//! client id, `notice:<group version>`, makes every ask after the first append nothing.

use im_proto::{
    GroupId,
    v1::{NoticeKind, NoticeWrite, SystemNotice, submit_result},
};
use prost::Message as _;

use super::{Actor, Business, now_ms};
use crate::{
    error::BusinessError,
    store::{GroupRecord, NoticeRecord},
};

/// How long a core node has to append a notice before it is left for the next round.
const APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Notices asked again per round at most.
const ROUND: u32 = 100;

/// The encoded notice of `kind`, done by `actor` to `targets`, with a fallback text.
pub(super) fn notice(kind: NoticeKind, actor: &Actor, targets: &[String]) -> Vec<u8> {
    let (actor_user_id, who) = match actor {
        Actor::App => (String::new(), "the app".to_owned()),
        Actor::User(user) => (user.clone(), user.clone()),
    };
    let listed = targets.join(", ");
    let text = match kind {
        NoticeKind::GroupCreated => format!("{who} created the group"),
        NoticeKind::MembersAdded => format!("{who} added {listed}"),
        NoticeKind::MembersRemoved => format!("{who} removed {listed}"),
        NoticeKind::MemberLeft => format!("{listed} left"),
        _ => String::new(),
    };
    SystemNotice {
        kind: kind.into(),
        actor_user_id,
        target_user_ids: targets.to_vec(),
        text,
    }
    .encode_to_vec()
}

impl Business {
    /// Appends the notice just stored with the change that brought `group` to its version;
    /// left for [`Self::append_pending_notices`] if no core node takes it now.
    pub(super) async fn append_notice(&self, group: &GroupRecord, body: Vec<u8>) {
        let notice = NoticeRecord {
            group_id: group.group_id.clone(),
            version: group.version,
            body,
            created_at_ms: now_ms(),
        };
        if let Err(error) = self.append(&notice).await {
            metrics::counter!("im_notices_total", "outcome" => "deferred").increment(1);
            tracing::warn!(
                group_id = %notice.group_id,
                version = notice.version,
                %error,
                "notice not appended yet; it is asked again"
            );
        }
    }

    /// Asks again for the notices recorded at least `age_ms` ago and not appended yet, oldest
    /// first; how many were appended now. Members whose add it completes are announced again
    /// (`im.member`), so that core nodes drop what they cached while the seq was unknown.
    pub async fn append_pending_notices(&self, age_ms: i64) -> Result<usize, BusinessError> {
        let pending = self.store.pending_notices(now_ms() - age_ms, ROUND).await?;
        let mut appended = 0;
        for notice in &pending {
            match self.append(notice).await {
                Ok(joined) => {
                    appended += 1;
                    if !joined.is_empty() {
                        self.joined_event(&notice.group_id, joined).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(group_id = %notice.group_id, version = notice.version, %error, "notice not appended");
                    break;
                }
            }
        }
        Ok(appended)
    }

    /// Has a core node append `notice`, then forgets it and gives the members it added their
    /// first seq; the members it added.
    async fn append(&self, notice: &NoticeRecord) -> Result<Vec<String>, BusinessError> {
        let body = SystemNotice::decode(notice.body.as_slice()).map_err(|e| {
            BusinessError::Internal(format!("a stored notice does not decode: {e}"))
        })?;
        let group = GroupId::new(notice.group_id.as_str())
            .map_err(|e| BusinessError::Internal(format!("a stored notice's group: {e}")))?;
        let joined = match body.kind() {
            NoticeKind::MembersAdded => body.target_user_ids.clone(),
            _ => Vec::new(),
        };
        let write = NoticeWrite {
            conversation_id: im_proto::ConversationId::group(group).to_string(),
            client_msg_id: format!("notice:{}", notice.version),
            notice: Some(body),
        };
        let answer = self.bus.call(&write, APPEND_TIMEOUT).await.map_err(|e| {
            BusinessError::Internal(format!("no core node appended the notice: {e}"))
        })?;
        let Some(submit_result::Result::Ack(ack)) = answer.result else {
            return Err(BusinessError::Internal(
                "the notice was not appended".into(),
            ));
        };
        self.store
            .notice_appended(&notice.group_id, notice.version, ack.seq as i64, &joined)
            .await?;
        metrics::counter!("im_notices_total", "outcome" => "appended").increment(1);
        Ok(joined)
    }
}
