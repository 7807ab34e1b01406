//! Get Attributes (KMIP 1.4 §4.12), Get Attribute List (§4.13), Add / Modify / Delete Attribute
//! (§4.14–4.16) and Set Attribute (KMIP 2.0 §6.1.51), over the attributes of `crate::attributes`.

use keyfort_core::{CoreError, Key};

use super::undo::Undo;
use super::{Ctx, OpResult, core, uid_item};
use crate::ResultReason;
use crate::attributes::{self, Attr};
use crate::message::{Invalid, Struct, structure};
use crate::ttlv::{Item, Tag, Value};

async fn object(ctx: &Ctx<'_>, id: &str) -> Result<Key, Invalid> {
    ctx.core
        .key(ctx.caller(), ctx.instance(), id)
        .await
        .map_err(core)
}

pub fn multi_valued(name: &str) -> bool {
    attributes::is_custom(name)
        || matches!(
            name,
            "Name"
                | "Object Group"
                | "Link"
                | "Application Specific Information"
                | "Alternative Name"
        )
}

pub fn check_settable(name: &str) -> Result<(), Invalid> {
    if attributes::READ_ONLY.contains(&name) {
        return Err(Invalid::new(
            ResultReason::ATTRIBUTE_READ_ONLY,
            format!("{name} is set by the server"),
        ));
    }
    if !attributes::is_settable(name) {
        return Err(Invalid::new(
            ResultReason::UNSUPPORTED_ATTRIBUTE,
            format!("attribute {name} is not supported"),
        ));
    }
    Ok(())
}

/// Applies an edit of attribute `name` through the core (Manager role, audited); `edit` may
/// refuse. Records how to undo it.
async fn edit(
    ctx: &mut Ctx<'_>,
    id: &str,
    name: &str,
    edit: impl FnOnce(&mut Key) -> Result<Option<Attr>, Invalid>,
) -> Result<Option<Attr>, Invalid> {
    let mut refusal = None;
    let mut result = None;
    let mut previous = Vec::new();
    let outcome = ctx
        .core
        .update_object(
            ctx.caller(),
            ctx.instance(),
            id,
            "key.attributes.update",
            |k| {
                previous = attributes::stored_values(k, name);
                let before = attributes::flag(k, name);
                match edit(k)
                    .and_then(|r| one_way(name, before, attributes::flag(k, name)).map(|()| r))
                {
                    Ok(r) => {
                        result = r;
                        Ok(())
                    }
                    Err(e) => {
                        refusal = Some(e);
                        Err(CoreError::InvalidField {
                            field: "attribute",
                            rule: "refused by the KMIP attribute rules",
                        })
                    }
                }
            },
        )
        .await;
    match (outcome, refusal) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(core(e)),
        (Ok(key), None) => {
            ctx.record(Undo::Attribute {
                id: key.id,
                name: name.to_owned(),
                previous,
                row_version: key.row_version,
            });
            Ok(result)
        }
    }
}

/// Extractable only goes from true to false and Sensitive only from false to true (as in
/// PKCS #11): an object once protected stays protected, whatever is modified or deleted.
fn one_way(name: &str, before: Option<bool>, after: Option<bool>) -> Result<(), Invalid> {
    let kept = match name {
        "Extractable" => before != Some(false) || after == Some(false),
        "Sensitive" => before != Some(true) || after == Some(true),
        _ => true,
    };
    if kept {
        Ok(())
    } else {
        Err(Invalid::new(
            ResultReason::PERMISSION_DENIED,
            format!("{name} may not be changed back"),
        ))
    }
}

fn store_err(e: Invalid) -> Invalid {
    e
}

/// The requested names: 1.x Attribute Names or 2.x Attribute References.
pub fn requested_names(p: &Struct<'_>) -> Result<Vec<String>, Invalid> {
    p.items
        .iter()
        .filter(|i| i.tag == Tag::ATTRIBUTE_NAME || i.tag == Tag::ATTRIBUTE_REFERENCE)
        .map(attributes::reference_name)
        .collect()
}

pub async fn get_attributes(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let names = requested_names(p)?;
    let key = object(ctx, &id).await?;
    let all = attributes::all(&key);
    let selected: Vec<Attr> = all
        .into_iter()
        .filter(|a| names.is_empty() || names.contains(&a.name))
        .collect();
    let mut out = vec![uid_item(&key.id)];
    let v2 = ctx.version.is_v2();
    let encoded = attributes::encode_attrs(&selected, v2);
    if v2 {
        out.push(structure(Tag::ATTRIBUTES, encoded));
    } else {
        out.extend(encoded);
    }
    Ok(out)
}

pub async fn get_attribute_list(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let key = object(ctx, &id).await?;
    let mut names: Vec<String> = Vec::new();
    for a in attributes::all(&key) {
        if !names.contains(&a.name) {
            names.push(a.name);
        }
    }
    let mut out = vec![uid_item(&key.id)];
    for n in names {
        if ctx.version.is_v2() {
            out.extend(attributes::reference_item(&n));
        } else {
            out.push(Item::new(Tag::ATTRIBUTE_NAME, Value::TextString(n)));
        }
    }
    Ok(out)
}

/// The attribute of a 1.x payload (`Attribute`) or a 2.x one (`tag` holding one tagged item).
pub fn payload_attr(p: &Struct<'_>, v2_tag: Tag) -> Result<Option<Attr>, Invalid> {
    if let Some(a) = p.get(Tag::ATTRIBUTE) {
        return attributes::read_attribute(a).map(Some);
    }
    match p.child(v2_tag)? {
        Some(s) => {
            let item = s.items.first().ok_or_else(|| Invalid::missing(v2_tag))?;
            attributes::from_v2_item(item).map(Some)
        }
        None => Ok(None),
    }
}

fn response(ctx: &Ctx<'_>, id: &str, attr: Option<Attr>) -> Vec<Item> {
    let mut out = vec![uid_item(id)];
    if !ctx.version.is_v2()
        && let Some(a) = attr
    {
        out.extend(attributes::encode_attrs(&[a], false));
    }
    out
}

pub async fn add_attribute(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let attr =
        payload_attr(p, Tag::NEW_ATTRIBUTE)?.ok_or_else(|| Invalid::missing(Tag::ATTRIBUTE))?;
    check_settable(&attr.name)?;
    let added = edit(ctx, &id, &attr.name, |k| {
        let mut values = attributes::stored_values(k, &attr.name);
        if !values.is_empty() && !multi_valued(&attr.name) {
            return Err(Invalid::new(
                ResultReason::ATTRIBUTE_SINGLE_VALUED,
                format!("{} already has a value", attr.name),
            ));
        }
        values.push(attr.value.clone());
        attributes::set_stored(k, &attr.name, &values).map_err(store_err)?;
        let index = i32::try_from(values.len() - 1).unwrap_or(i32::MAX);
        Ok(Some(Attr {
            index: Some(index),
            ..attr.clone()
        }))
    })
    .await?;
    Ok(response(ctx, &id, added))
}

pub async fn set_attribute(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let attr =
        payload_attr(p, Tag::NEW_ATTRIBUTE)?.ok_or_else(|| Invalid::missing(Tag::NEW_ATTRIBUTE))?;
    check_settable(&attr.name)?;
    if multi_valued(&attr.name) && !attributes::is_custom(&attr.name) {
        return Err(Invalid::new(
            ResultReason::MULTI_VALUED_ATTRIBUTE,
            format!("{} is multi-valued: use Add Attribute", attr.name),
        ));
    }
    edit(ctx, &id, &attr.name, |k| {
        attributes::set_stored(k, &attr.name, std::slice::from_ref(&attr.value))?;
        Ok(None)
    })
    .await?;
    Ok(vec![uid_item(&id)])
}

pub async fn modify_attribute(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let attr =
        payload_attr(p, Tag::NEW_ATTRIBUTE)?.ok_or_else(|| Invalid::missing(Tag::ATTRIBUTE))?;
    let current =
        payload_attr(p, Tag::CURRENT_ATTRIBUTE)?.filter(|_| p.get(Tag::ATTRIBUTE).is_none());
    check_settable(&attr.name)?;
    let modified = edit(ctx, &id, &attr.name, |k| {
        let mut values = attributes::stored_values(k, &attr.name);
        let index = match (&current, attr.index) {
            (Some(c), _) => values.iter().position(|v| *v == c.value),
            (None, Some(i)) => usize::try_from(i).ok(),
            (None, None) => Some(0),
        };
        let slot = index.and_then(|i| values.get_mut(i)).ok_or_else(|| {
            Invalid::new(
                ResultReason::ITEM_NOT_FOUND,
                format!("{} has no such value", attr.name),
            )
        })?;
        *slot = attr.value.clone();
        attributes::set_stored(k, &attr.name, &values)?;
        Ok(Some(Attr {
            index: index.and_then(|i| i32::try_from(i).ok()),
            ..attr.clone()
        }))
    })
    .await?;
    Ok(response(ctx, &id, modified))
}

pub async fn delete_attribute(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let id = ctx.uid(p)?;
    let (name, index, current) = match payload_attr(p, Tag::CURRENT_ATTRIBUTE)? {
        Some(a) if p.get(Tag::ATTRIBUTE).is_none() => (a.name.clone(), None, Some(a.value)),
        _ => match p.get(Tag::ATTRIBUTE_REFERENCE) {
            Some(r) => (attributes::reference_name(r)?, None, None),
            None => (
                p.text(Tag::ATTRIBUTE_NAME)?.to_owned(),
                p.opt_integer(Tag::ATTRIBUTE_INDEX)?,
                None,
            ),
        },
    };
    check_settable(&name)?;
    let deleted = edit(ctx, &id, &name.clone(), |k| {
        let mut values = attributes::stored_values(k, &name);
        let i = match (&current, index) {
            (Some(c), _) => values.iter().position(|v| v == c),
            (None, Some(i)) => usize::try_from(i).ok(),
            (None, None) => Some(0),
        }
        .filter(|i| *i < values.len())
        .ok_or_else(|| {
            Invalid::new(
                ResultReason::ITEM_NOT_FOUND,
                format!("{name} has no such value"),
            )
        })?;
        let value = values.remove(i);
        attributes::set_stored(k, &name, &values)?;
        Ok(Some(Attr {
            name: name.clone(),
            index: i32::try_from(i).ok(),
            value,
        }))
    })
    .await?;
    Ok(response(ctx, &id, deleted))
}
