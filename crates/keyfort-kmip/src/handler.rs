//! One request message in, one response message out (KMIP 1.4 §7): decoding with limits,
//! version negotiation, batch items with their ids echoed, the Batch Error Continuation Option,
//! and the Maximum Response Size. Pure apart from the core calls; no socket here.

use std::collections::HashMap;

use keyfort_core::{Keyfort, KmipSession};

use crate::message::{
    Invalid, MessageError, ProtocolVersion, RequestMessage, ResponseBatchItem, ResponseMessage,
};
use crate::ops::{self, Ctx};
use crate::ttlv::{Limits, decode, encode};
use crate::{BatchErrorContinuationOption, ResultReason, ResultStatus};

/// The identity a connection was opened with: a registered client, or a certificate that
/// verified but is not registered, or not allowed from its address (every request is then
/// refused).
pub enum Peer<'a> {
    Client(&'a KmipSession),
    Unregistered,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn single_failure(version: ProtocolVersion, error: Invalid) -> ResponseMessage {
    ResponseMessage {
        version,
        time_stamp: now_secs(),
        items: vec![fail_item(version, None, None, error)],
    }
}

fn fail_item(
    version: ProtocolVersion,
    operation: Option<crate::Operation>,
    id: Option<Vec<u8>>,
    mut error: Invalid,
) -> ResponseBatchItem {
    error.reason = crate::error::for_version(error.reason, version);
    ResponseBatchItem::failure(operation, id, error)
}

/// Answers one encoded request message with one encoded response message.
pub async fn handle(core: &Keyfort, peer: Peer<'_>, request: &[u8], limits: &Limits) -> Vec<u8> {
    let response = match decode(request, limits) {
        Err(e) => single_failure(
            ProtocolVersion::new(1, 0),
            Invalid::message(format!("undecodable TTLV: {e}")),
        ),
        Ok(item) => match RequestMessage::from_item(&item) {
            Err(MessageError { version, error }) => single_failure(version, error),
            Ok(message) => match peer {
                Peer::Unregistered => single_failure(
                    message.header.version,
                    Invalid::new(
                        ResultReason::AUTHENTICATION_NOT_SUCCESSFUL,
                        "the client certificate is not registered, or not allowed from this address",
                    ),
                ),
                Peer::Client(session) => return run(core, session, message).await,
            },
        },
    };
    encode(&response.into_item())
}

/// Runs the batch; the encoded response.
async fn run(core: &Keyfort, session: &KmipSession, message: RequestMessage) -> Vec<u8> {
    let version = message.header.version;
    let continuation = message.header.batch_error_continuation;
    let undo = continuation == BatchErrorContinuationOption::UNDO && message.items.len() > 1;
    // With a Maximum Response Size the changes are logged too, to be taken back if the answer
    // turns out too large (the client is told no item was done).
    let bounded = message.header.maximum_response_size.is_some();
    if undo {
        let last = message.items.len() - 1;
        if let Some(blocker) = message.items[..last]
            .iter()
            .find(|i| !ops::undo::undoable(i.operation, &i.payload))
        {
            let error = ops::undo::refusal(blocker.operation);
            let refused = ResponseMessage {
                version,
                time_stamp: now_secs(),
                items: message
                    .items
                    .iter()
                    .map(|i| fail_item(version, Some(i.operation), i.id.clone(), error.clone()))
                    .collect(),
            };
            return encode(&refused.into_item());
        }
    }
    let mut ctx = Ctx {
        core,
        session,
        version,
        placeholder: None,
        undo: (undo || bounded).then(Vec::new),
        item: 0,
    };
    let mut items = Vec::with_capacity(message.items.len());
    for (n, item) in message.items.iter().enumerate() {
        ctx.item = n;
        match ops::dispatch(&mut ctx, item.operation, &item.payload).await {
            Ok(payload) => items.push(ResponseBatchItem::success(
                item.operation,
                item.id.clone(),
                payload,
            )),
            Err(e) => {
                items.push(fail_item(version, Some(item.operation), item.id.clone(), e));
                if continuation == BatchErrorContinuationOption::CONTINUE {
                    continue;
                }
                // Stop and Undo: the rest is not run; Undo also reverts what ran before.
                if undo && let Some(log) = ctx.undo.take() {
                    undo_batch(&ctx, log, &mut items[..n], n).await;
                }
                break;
            }
        }
    }
    let encoded = encode(
        &ResponseMessage {
            version,
            time_stamp: now_secs(),
            items,
        }
        .into_item(),
    );
    let size = encoded.len();
    match message.header.maximum_response_size {
        Some(max) if usize::try_from(max).is_ok_and(|m| size > m) => {
            // Every item is answered Response Too Large: none keeps its effect.
            if let Some(log) = ctx.undo.take() {
                undo_batch(&ctx, log, &mut [], message.items.len()).await;
            }
            let items = message
                .items
                .iter()
                .map(|i| {
                    fail_item(
                        version,
                        Some(i.operation),
                        i.id.clone(),
                        Invalid::new(
                            ResultReason::RESPONSE_TOO_LARGE,
                            format!("the response ({size} bytes) exceeds Maximum Response Size"),
                        ),
                    )
                })
                .collect();
            encode(
                &ResponseMessage {
                    version,
                    time_stamp: now_secs(),
                    items,
                }
                .into_item(),
            )
        }
        _ => encoded,
    }
}

/// Compensates the changes of the items before the failed item `failed`, last first, and
/// answers those items with Operation Undone. An item whose compensation fails keeps its
/// success answer (its effect stays), and the failure is logged.
async fn undo_batch(
    ctx: &Ctx<'_>,
    log: Vec<(usize, ops::undo::Undo)>,
    done: &mut [ResponseBatchItem],
    failed: usize,
) {
    let mut kept = vec![false; done.len()];
    // The row version each object is at after the compensations run so far.
    let mut versions: HashMap<String, Option<i64>> = HashMap::new();
    for (n, undo) in log.iter().rev() {
        let expected = versions.get(undo.id()).copied().flatten();
        match ops::undo::apply(ctx, undo, expected).await {
            Ok(version) => {
                versions.insert(undo.id().to_owned(), version);
            }
            Err(e) => {
                tracing::warn!(item = n, reason = ?e.reason, message = %e.message, "KMIP batch undo failed");
                if let Some(k) = kept.get_mut(*n) {
                    *k = true;
                }
            }
        }
    }
    for (item, kept) in done.iter_mut().zip(kept) {
        if !kept {
            item.status = ResultStatus::OPERATION_UNDONE;
            item.message = Some(format!("undone: batch item {} failed", failed + 1));
            item.payload = None;
        }
    }
}
