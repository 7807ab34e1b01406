//! Key Protect's key listing rules (`specs/keyprotect-api.md` §11): search over at most 5000
//! keys, the direct lookup of a key named by id or alias, and paging with that key first.

use crate::Result;
use crate::auth::Caller;
use crate::key::{Key, KeyQuery, SearchScope};
use crate::kms::{KmsRefusal, refuse};
use crate::service::Keyfort;

/// The most keys a search looks through (Key Protect's limit).
pub const MAX_SEARCH_SPACE: u64 = 5000;

impl Keyfort {
    /// One page of `query`, the total matching, and whether the search was incomplete.
    ///
    /// Without `search`, the store pages. With it: the keys matching every other condition
    /// form the search space. A full key id, or a search that includes aliases, is also looked
    /// up directly (unless negated); a key found that way comes first. A space over
    /// [`MAX_SEARCH_SPACE`] keys is refused, unless the lookup found the key, which is then
    /// the only answer (`incomplete`).
    ///
    /// KMIP adapters' objects are not Key Protect keys: for a caller that is not a KMIP client
    /// they are left out in the store's query, so paging, totals, the search space and the
    /// lookup count only real keys.
    pub(crate) async fn key_page(
        &self,
        caller: &Caller,
        instance_id: &str,
        query: &KeyQuery,
    ) -> Result<(Vec<Key>, u64, bool)> {
        let mut filter = query.to_filter();
        filter.without_kmip_adapter_objects =
            crate::kmip_adapters::lists_without_adapter_objects(caller);
        let Some(text) = &query.search else {
            let records = self.store().list_keys(instance_id, &filter).await?;
            let total = self.store().count_keys(instance_id, &filter).await?;
            let keys = records
                .into_iter()
                .map(Key::from_record)
                .collect::<Result<Vec<_>>>()?;
            return Ok((keys, total, false));
        };
        let mut space = filter.clone();
        space.search = None;
        space.offset = 0;
        space.limit = None;
        let searchable = self.store().count_keys(instance_id, &space).await?;

        let mode = query.search_mode;
        let by_id = uuid::Uuid::try_parse(text).is_ok();
        let by_alias = mode.scope != SearchScope::Name;
        let mut lookup = None;
        if !mode.negate && (by_id || by_alias) {
            let record = if by_id {
                self.store().key(instance_id, text).await?
            } else {
                self.store().key_by_alias(instance_id, text).await?
            };
            if let Some(found) = record {
                // The key must still meet every other condition of the query.
                let mut only = space.clone();
                only.id = Some(found.id);
                lookup = self.store().list_keys(instance_id, &only).await?.pop();
            }
        }
        if searchable > MAX_SEARCH_SPACE {
            return match lookup {
                Some(record) => Ok((vec![Key::from_record(record)?], 1, true)),
                None => Err(refuse(instance_id, KmsRefusal::SearchTooBroad)),
            };
        }
        let mut everything = filter.clone();
        everything.offset = 0;
        everything.limit = None;
        let mut records = self.store().list_keys(instance_id, &everything).await?;
        if let Some(first) = lookup {
            records.retain(|r| r.id != first.id);
            records.insert(0, first);
        }
        let total = records.len() as u64;
        let skip = usize::try_from(query.offset).unwrap_or(usize::MAX);
        let take = query
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let keys = records
            .into_iter()
            .skip(skip)
            .take(take)
            .map(Key::from_record)
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, total, false))
    }
}

/// The part of a walk's matches that a caller asked for: counts every match offered, and keeps
/// those from the `offset`-th on, at most `limit`.
pub(crate) struct Window<T> {
    offset: usize,
    limit: usize,
    pub(crate) total: usize,
    pub(crate) items: Vec<T>,
}

impl<T> Window<T> {
    pub(crate) fn new(offset: usize, limit: usize) -> Window<T> {
        Window {
            offset,
            limit,
            total: 0,
            items: Vec::new(),
        }
    }

    /// One more match.
    pub(crate) fn offer(&mut self, item: T) {
        self.total += 1;
        if self.total > self.offset && self.items.len() < self.limit {
            self.items.push(item);
        }
    }
}
