//! Locate (KMIP 1.4 §4.9): objects whose attributes match every given attribute, with Maximum
//! Items and Offset Items.

use keyfort_core::Key;

use super::{Ctx, OpResult, core, uid_item};
use crate::attributes::{self, Attr};
use crate::message::{Invalid, Struct};
use crate::ttlv::{Item, Tag, Value};

fn name_text(v: &Value) -> Option<&str> {
    match v {
        Value::Structure(items) => items.iter().find_map(|i| match &i.value {
            Value::TextString(s) if i.tag == Tag::NAME_VALUE => Some(s.as_str()),
            _ => None,
        }),
        _ => None,
    }
}

pub fn matches(key: &Key, wanted: &[Attr]) -> bool {
    let have = attributes::all(key);
    wanted.iter().all(|w| {
        have.iter().any(|h| {
            h.name == w.name
                && if w.name == "Name" {
                    name_text(&h.value).is_some() && name_text(&h.value) == name_text(&w.value)
                } else {
                    h.value == w.value
                }
        })
    })
}

pub async fn locate(ctx: &mut Ctx<'_>, p: &Struct<'_>) -> OpResult {
    let max = p.opt_integer(Tag::MAXIMUM_ITEMS)?;
    let offset = p.opt_integer(Tag::OFFSET_ITEMS)?.unwrap_or(0);
    if max.is_some_and(|m| m < 0) || offset < 0 {
        return Err(Invalid::field(
            "Maximum Items and Offset Items must not be negative",
        ));
    }
    let mut wanted: Vec<Attr> = p
        .all(Tag::ATTRIBUTE)
        .map(attributes::read_attribute)
        .collect::<Result<_, _>>()?;
    wanted.extend(attributes::read_template(
        p,
        Tag::TEMPLATE_ATTRIBUTE,
        Tag::ATTRIBUTES,
    )?);
    let (total, found) = ctx
        .core
        .locate_objects(
            ctx.caller(),
            ctx.instance(),
            |k| matches(k, &wanted),
            usize::try_from(offset).unwrap_or(usize::MAX),
            max.and_then(|m| usize::try_from(m).ok()),
        )
        .await
        .map_err(core)?;
    let ids = found.iter().map(|id| uid_item(id));
    let mut out = Vec::new();
    if ctx.version >= crate::message::ProtocolVersion::new(1, 3) {
        out.push(Item::new(
            Tag::LOCATED_ITEMS,
            Value::Integer(i32::try_from(total).unwrap_or(i32::MAX)),
        ));
    }
    out.extend(ids);
    Ok(out)
}
