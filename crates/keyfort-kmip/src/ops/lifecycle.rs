//! Activate (KMIP 1.4 §4.19), Revoke (§4.20), Destroy (§4.21) and Check (§4.10), through the
//! core's one lifecycle.

use keyfort_core::Transition;

use super::undo::{Lifecycle, Undo};
use super::{Ctx, OpResult, core, uid_item};
use crate::message::{Invalid, Struct};
use crate::{ResultReason, RevocationReasonCode};

/// Moves the object through its lifecycle; in an Undo batch, first reads what the transition
/// will change, to put it back if the batch is undone.
async fn transition(ctx: &mut Ctx<'_>, p: &Struct<'_>, t: Transition) -> OpResult {
    let id = ctx.uid(p)?;
    let before = match ctx.undo {
        Some(_) => Some(
            ctx.core
                .key(ctx.caller(), ctx.instance(), &id)
                .await
                .map_err(core)?,
        ),
        None => None,
    };
    let key = ctx
        .core
        .transition_key(ctx.caller(), ctx.instance(), &id, t)
        .await
        .map_err(core)?;
    if let Some(before) = before {
        // Each write of an object adds one to its row version: one more than read means no
        // other change came between.
        let previous = (before.id == key.id && key.row_version == before.row_version + 1)
            .then(|| Lifecycle::of(&before));
        ctx.record(Undo::Transition {
            id: key.id.clone(),
            previous,
            row_version: key.row_version,
        });
    }
    ctx.placeholder = Some(key.id.clone());
    Ok(vec![uid_item(&key.id)])
}

pub async fn activate(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    transition(ctx, p, Transition::Activate).await
}

pub async fn destroy(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    transition(ctx, p, Transition::Destroy).await
}

/// A compromise reason makes the object compromised; any other deactivates it.
pub async fn revoke(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let reason = p
        .child(crate::ttlv::Tag::REVOCATION_REASON)?
        .ok_or_else(|| Invalid::missing(crate::ttlv::Tag::REVOCATION_REASON))?;
    let code = RevocationReasonCode(reason.enumeration(crate::ttlv::Tag::REVOCATION_REASON_CODE)?);
    let t = match code {
        RevocationReasonCode::KEY_COMPROMISE | RevocationReasonCode::CA_COMPROMISE => {
            Transition::Compromise
        }
        _ => Transition::Deactivate,
    };
    transition(ctx, p, t).await
}

/// Succeeds when the object's Cryptographic Usage Mask allows the requested uses.
pub async fn check(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let wanted = p.opt_integer(crate::ttlv::Tag::CRYPTOGRAPHIC_USAGE_MASK)?;
    let key = ctx
        .core
        .key(ctx.caller(), ctx.instance(), &id)
        .await
        .map_err(core)?;
    if let Some(w) = wanted
        && let Some(m) = super::usage_mask(&key)
        && w & !m != 0
    {
        return Err(Invalid::new(
            ResultReason::INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
            "the object's usage mask does not allow that use",
        ));
    }
    ctx.placeholder = Some(key.id.clone());
    Ok(vec![uid_item(&key.id)])
}
