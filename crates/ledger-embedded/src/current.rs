//! The projection as of the end of the log, for deciders.
//!
//! The projector stores what it has read, and commits its position after. Between a
//! crash and its catching up again, what it stored lags the log: a signout
//! acknowledged just before the crash is in the log only. A decider that read the
//! store alone would rotate the revoked family's refresh token. On the embedded
//! backend the log and the store are one database, so the join of both is one read:
//! the stored state plus the events from the projector's checkpoint on.

use async_trait::async_trait;
use ledger_core::ports::{BackendError, ProjectionStore};
use ledger_core::{FamilyState, Projection, SessionId, Subject, SubjectRevocation};

use crate::Embedded;

/// A [`ProjectionStore`] whose reads of a family or a subject see every event the
/// log holds, projected or not. Writes and snapshots are the store's.
#[derive(Clone, Debug)]
pub struct CurrentProjection {
    embedded: Embedded,
    /// The consumer group of the projector that writes the store.
    group: String,
}

impl CurrentProjection {
    pub fn new(embedded: Embedded, projector_group: impl Into<String>) -> Self {
        CurrentProjection {
            embedded,
            group: projector_group.into(),
        }
    }
}

#[async_trait]
impl ProjectionStore for CurrentProjection {
    async fn write(&self, batch: &Projection) -> Result<(), BackendError> {
        ProjectionStore::write(&self.embedded, batch).await
    }

    async fn family(&self, id: SessionId) -> Result<Option<FamilyState>, BackendError> {
        self.embedded.current_family(&self.group, id).await
    }

    async fn subject_revocation(
        &self,
        subject: &Subject,
    ) -> Result<Option<SubjectRevocation>, BackendError> {
        self.embedded
            .current_subject_revocation(&self.group, subject)
            .await
    }

    /// What the projector stored (readers bootstrap from it at its checkpoint).
    async fn snapshot(&self) -> Result<Projection, BackendError> {
        self.embedded.snapshot().await
    }
}
