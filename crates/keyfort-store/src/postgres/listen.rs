//! Following the change notifications of every node (`LISTEN keyfort_changes`).
//!
//! [`super::PgStore::changes`] starts a task with its own connection that listens on
//! [`super::CHANGES_CHANNEL`] and forwards each notification as a [`Change`]. When that
//! connection is lost, notifications sent meanwhile are lost too: the task reports
//! [`Change::Lost`] at once, reconnects with a growing pause, and reports [`Change::Listening`]
//! when it listens again. It reports `Listening` first of all, once it listens; until then, as
//! after `Lost`, a follower must assume it misses changes.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::CHANGES_CHANNEL;

/// Longest notification payload PostgreSQL accepts is 8000 bytes; ids are far shorter, and a
/// longer payload is sent as "the instance changed" instead.
const MAX_PAYLOAD: usize = 7900;
/// Pauses between reconnection attempts: from the first to the last, doubling.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Changes queued for a slow follower before the listener waits for it.
const QUEUE: usize = 4096;

/// What a committed transaction changed, or the state of the notification connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A key's record, aliases or versions (created, updated, rotated, re-sealed, purged).
    Key { instance_id: String, key_id: String },
    /// An instance's record, policies or secrets, or all of its keys (zeroization).
    Instance { instance_id: String },
    /// Some principal or API key.
    Principals,
    /// A notification this build cannot read: anything may have changed.
    Unknown,
    /// The connection is listening: from now on no change is missed.
    Listening,
    /// The connection is lost: changes may be missed until the next [`Change::Listening`].
    Lost,
}

impl Change {
    /// The notification payload: fields separated by tabs (ids never contain one).
    pub(crate) fn payload(&self) -> String {
        match self {
            Change::Key {
                instance_id,
                key_id,
            } => {
                let p = format!("key\t{instance_id}\t{key_id}");
                if p.len() <= MAX_PAYLOAD && !key_id.contains('\t') {
                    p
                } else {
                    Change::Instance {
                        instance_id: instance_id.clone(),
                    }
                    .payload()
                }
            }
            Change::Instance { instance_id } => {
                let p = format!("instance\t{instance_id}");
                if p.len() <= MAX_PAYLOAD && !instance_id.contains('\t') {
                    p
                } else {
                    "unknown".to_owned()
                }
            }
            Change::Principals => "principals".to_owned(),
            Change::Unknown | Change::Listening | Change::Lost => "unknown".to_owned(),
        }
    }

    /// Reads a payload; [`Change::Unknown`] for anything else.
    pub fn parse(payload: &str) -> Change {
        let mut fields = payload.split('\t');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some("key"), Some(instance_id), Some(key_id), None) => Change::Key {
                instance_id: instance_id.to_owned(),
                key_id: key_id.to_owned(),
            },
            (Some("instance"), Some(instance_id), None, None) => Change::Instance {
                instance_id: instance_id.to_owned(),
            },
            (Some("principals"), None, None, None) => Change::Principals,
            _ => Change::Unknown,
        }
    }
}

/// The stream of changes; dropping it stops the listening task.
#[derive(Debug)]
pub struct Changes {
    rx: mpsc::Receiver<Change>,
    task: JoinHandle<()>,
}

impl Changes {
    /// The next change; `None` only if the listening task has ended.
    pub async fn next(&mut self) -> Option<Change> {
        self.rx.recv().await
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn start(pool: PgPool) -> Changes {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(pool, tx));
    Changes { rx, task }
}

async fn run(pool: PgPool, tx: mpsc::Sender<Change>) {
    let mut pause = RETRY_FIRST;
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                pause = RETRY_FIRST;
                if tx.send(Change::Listening).await.is_err() {
                    return;
                }
                let reason = loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            if tx.send(Change::parse(n.payload())).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "connection closed".to_owned(),
                        Err(e) => break e.to_string(),
                    }
                };
                tracing::warn!(%reason, "change notifications lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for change notifications"),
        }
        if tx.send(Change::Lost).await.is_err() || pool.is_closed() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Report a lost connection at once; `run` reconnects with a new listener.
    listener.eager_reconnect(false);
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for c in [
            Change::Key {
                instance_id: "i-1".to_owned(),
                key_id: "k-1".to_owned(),
            },
            Change::Instance {
                instance_id: "i-1".to_owned(),
            },
            Change::Principals,
        ] {
            assert_eq!(Change::parse(&c.payload()), c);
        }
        for junk in [
            "",
            "key",
            "key\ta",
            "key\ta\tb\tc",
            "instance",
            "x\ty",
            "principals\tx",
        ] {
            assert_eq!(Change::parse(junk), Change::Unknown, "{junk:?}");
        }
        let long = Change::Key {
            instance_id: "i".to_owned(),
            key_id: "k".repeat(9000),
        };
        assert_eq!(
            Change::parse(&long.payload()),
            Change::Instance {
                instance_id: "i".to_owned()
            }
        );
    }
}
