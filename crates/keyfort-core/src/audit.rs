//! Reading, verifying and exporting the audit trail (DESIGN §4).
//!
//! Each instance's events form a hash chain kept by the store:
//! `hash = SHA-256(prev_hash ‖ seq as u64 BE ‖ at as i64 BE ‖ body)`. [`Keyfort::verify_audit`]
//! recomputes it from the first event: a changed event breaks its own hash, a removed one leaves
//! a gap in `seq` or a broken link, a reordering breaks the links.

use keyfort_store::{AuditEventRecord, AuditFilter};
use serde_json::{Value, json};

use crate::Result;
use crate::auth::{Action, Caller};
use crate::error::CoreError;
use crate::service::Keyfort;

/// Largest page of audit events.
pub const MAX_AUDIT_PAGE: u64 = 10_000;

/// One audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub instance_id: String,
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub actor_id: String,
    pub action: String,
    pub target: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    pub correlation_id: Option<String>,
    pub source: Option<String>,
    pub details: Value,
    pub hash: Vec<u8>,
    pub prev_hash: Vec<u8>,
}

impl AuditEvent {
    fn from_record(r: AuditEventRecord) -> AuditEvent {
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let text = |n: &str| body.get(n).and_then(Value::as_str).map(str::to_owned);
        AuditEvent {
            instance_id: r.instance_id,
            seq: r.seq,
            at: r.at,
            actor: text("actor").unwrap_or_default(),
            actor_id: text("actor_id").unwrap_or_default(),
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            correlation_id: text("correlation_id"),
            source: text("source"),
            details: body.get("details").cloned().unwrap_or(Value::Null),
            hash: r.hash,
            prev_hash: r.prev_hash,
        }
    }

    /// The event in the DMTF Cloud Auditing Data Federation (CADF) event shape.
    pub fn to_cadf(&self) -> Value {
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let outcome = match self.outcome.as_str() {
            "success" => "success",
            _ => "failure",
        };
        json!({
            "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
            "eventType": "activity",
            "id": format!("{}:{}", self.instance_id, self.seq),
            "eventTime": time,
            "action": self.action,
            "outcome": outcome,
            "reason": {"reasonType": "keyfort", "reasonCode": self.outcome, "details": self.details},
            "initiator": {
                "id": self.actor_id,
                "name": self.actor,
                "typeURI": "service/security/account/user",
                "host": {"address": self.source},
            },
            "target": {"id": self.target, "typeURI": "kms/key", "name": self.target},
            "observer": {"id": "keyfort", "typeURI": "service/security/kms", "name": "keyfort"},
            "correlationId": self.correlation_id,
            "attachments": [{
                "name": "chain",
                "typeURI": "keyfort/audit-chain",
                "content": {"instance": self.instance_id, "seq": self.seq, "hash": hex::encode(&self.hash), "prev_hash": hex::encode(&self.prev_hash)},
            }],
        })
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub after_seq: i64,
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub target: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub limit: u64,
}

/// The result of a chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Events checked.
    pub events: u64,
    /// The first problem found, if any: (seq where it was seen, what).
    pub problem: Option<(i64, AuditProblem)>,
    /// The hash of the last event (hex), to compare with a copy kept elsewhere.
    pub head: String,
}

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditProblem {
    /// An event's content does not match its hash (changed).
    ChangedEvent,
    /// A sequence number is missing (removed event).
    MissingEvent,
    /// An event does not link to the one before it (removed or reordered).
    BrokenLink,
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuditProblem::ChangedEvent => "an event was changed",
            AuditProblem::MissingEvent => "an event is missing",
            AuditProblem::BrokenLink => {
                "an event does not follow the one before it (removed or reordered)"
            }
        })
    }
}

fn chain_hash(prev: &[u8], seq: i64, at: i64, body: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(prev.len() + 16 + body.len());
    input.extend_from_slice(prev);
    input.extend_from_slice(&(seq as u64).to_be_bytes());
    input.extend_from_slice(&at.to_be_bytes());
    input.extend_from_slice(body.as_bytes());
    keyfort_crypto::digest::sha256(&input)
}

fn authorize_audit(caller: &Caller, instance_id: &str) -> Result<()> {
    if caller.is_administrator() {
        return Ok(());
    }
    caller.authorize(Action::ManageKey, instance_id, None)
}

impl Keyfort {
    /// Audit events of an instance (Manager of the instance, or an administrator).
    pub async fn audit_events(
        &self,
        caller: &Caller,
        instance_id: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>> {
        // Authorized first: to anyone else, an instance that exists and one that does not
        // answer alike.
        authorize_audit(caller, instance_id)?;
        self.instance_record(instance_id).await?;
        if query.limit == 0 || query.limit > MAX_AUDIT_PAGE {
            return Err(CoreError::InvalidField {
                field: "limit",
                rule: "must be 1 to 10000",
            });
        }
        let filter = AuditFilter {
            after_seq: query.after_seq,
            from: query.from,
            until: query.until,
            target: query.target.clone(),
            action: query.action.clone(),
            outcome: query.outcome.clone(),
            limit: query.limit,
        };
        let records = self
            .store()
            .query_audit_events(instance_id, &filter)
            .await?;
        Ok(records.into_iter().map(AuditEvent::from_record).collect())
    }

    /// Recomputes an instance's whole chain (Manager or administrator).
    pub async fn verify_audit(
        &self,
        caller: &Caller,
        instance_id: &str,
    ) -> Result<AuditVerification> {
        // Authorized first: to anyone else, an instance that exists and one that does not
        // answer alike.
        authorize_audit(caller, instance_id)?;
        self.instance_record(instance_id).await?;
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1i64;
        let mut events = 0u64;
        loop {
            let page = self
                .store()
                .audit_events(instance_id, expected_seq - 1, 1000)
                .await?;
            if page.is_empty() {
                break;
            }
            for r in page {
                events += 1;
                if r.seq != expected_seq {
                    return Ok(AuditVerification {
                        events,
                        problem: Some((r.seq, AuditProblem::MissingEvent)),
                        head: hex::encode(&prev),
                    });
                }
                if r.prev_hash != prev {
                    return Ok(AuditVerification {
                        events,
                        problem: Some((r.seq, AuditProblem::BrokenLink)),
                        head: hex::encode(&prev),
                    });
                }
                if chain_hash(&r.prev_hash, r.seq, r.at, &r.body)[..] != r.hash[..] {
                    return Ok(AuditVerification {
                        events,
                        problem: Some((r.seq, AuditProblem::ChangedEvent)),
                        head: hex::encode(&prev),
                    });
                }
                prev = r.hash;
                expected_seq += 1;
            }
        }
        Ok(AuditVerification {
            events,
            problem: None,
            head: hex::encode(&prev),
        })
    }
}
