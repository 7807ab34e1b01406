//! The one key lifecycle of Keyfort (NIST SP 800-57 Part 1 §5.3), and its views in each protocol.
//!
//! | state | code | Key Protect | KMIP (1.4 §3.22) | UKO |
//! |---|---|---|---|---|
//! | [`KeyState::PreActive`] | 0 | 0 Pre-activation | 1 Pre-Active | `pre_activation` |
//! | [`KeyState::Active`] | 1 | 1 Active | 2 Active | `active` |
//! | [`KeyState::Suspended`] | 2 | 2 Suspended | 3 Deactivated | `deactivated` |
//! | [`KeyState::Deactivated`] | 3 | 3 Deactivated | 3 Deactivated | `deactivated` |
//! | [`KeyState::Compromised`] | 4 | 3 Deactivated | 4 Compromised | `compromised` |
//! | [`KeyState::Destroyed`] | 5 | 5 Destroyed | 5 Destroyed | `destroyed` |
//! | [`KeyState::DestroyedCompromised`] | 6 | 5 Destroyed | 6 Destroyed Compromised | `destroyed_compromised` |
//!
//! `Suspended` is Key Protect's "disabled": reversible, and no use at all. KMIP and UKO have no
//! such state and see it as deactivated.
//!
//! Every door asks [`KeyState::apply`] for a transition and [`KeyState::permits`] for a use; no
//! door decides lifecycle rules of its own.

use std::fmt;

/// A key's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    PreActive,
    Active,
    Suspended,
    Deactivated,
    Compromised,
    Destroyed,
    DestroyedCompromised,
}

/// A lifecycle transition requested by a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Pre-active → active (KMIP Activate, UKO activate).
    Activate,
    /// Deactivated → active (UKO reactivate). KMIP forbids it; Key Protect has no such action.
    Reactivate,
    /// Active → suspended (Key Protect disable).
    Disable,
    /// Suspended → active (Key Protect enable).
    Enable,
    /// Pre-active, active or suspended → deactivated: expiry passed, KMIP Revoke with a
    /// non-compromise reason, UKO deactivate.
    Deactivate,
    /// Any live state → compromised; destroyed → destroyed-compromised (KMIP Revoke with reason
    /// key compromise).
    Compromise,
    /// Key Protect delete (soft): any live state → destroyed (compromised → destroyed-compromised).
    /// Unlike [`Transition::Destroy`], an active key may be deleted.
    Delete,
    /// KMIP Destroy and UKO destroy: pre-active, suspended or deactivated → destroyed;
    /// compromised → destroyed-compromised. An active key must be deactivated first.
    Destroy,
    /// Key Protect restore: destroyed → active.
    Restore,
}

/// What a key is to be used for, to check against its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// Apply protection: encrypt, wrap, sign, MAC.
    Protect,
    /// Process protected data: decrypt, unwrap, verify.
    Process,
    /// Rotate to a new version.
    Rotate,
    /// Read the material of an extractable key.
    Export,
}

impl KeyState {
    /// Every state, in code order.
    pub const ALL: [KeyState; 7] = [
        KeyState::PreActive,
        KeyState::Active,
        KeyState::Suspended,
        KeyState::Deactivated,
        KeyState::Compromised,
        KeyState::Destroyed,
        KeyState::DestroyedCompromised,
    ];

    /// The stored code of this state.
    pub fn code(self) -> i64 {
        match self {
            KeyState::PreActive => 0,
            KeyState::Active => 1,
            KeyState::Suspended => 2,
            KeyState::Deactivated => 3,
            KeyState::Compromised => 4,
            KeyState::Destroyed => 5,
            KeyState::DestroyedCompromised => 6,
        }
    }

    /// The state of a stored code, if it is one.
    pub fn from_code(code: i64) -> Option<KeyState> {
        KeyState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The Key Protect v2 `state` number.
    pub fn key_protect(self) -> u8 {
        match self {
            KeyState::PreActive => 0,
            KeyState::Active => 1,
            KeyState::Suspended => 2,
            KeyState::Deactivated | KeyState::Compromised => 3,
            KeyState::Destroyed | KeyState::DestroyedCompromised => 5,
        }
    }

    /// The KMIP State enumeration value (KMIP 1.4 §9.1.3.2.24).
    pub fn kmip(self) -> u32 {
        match self {
            KeyState::PreActive => 1,
            KeyState::Active => 2,
            KeyState::Suspended | KeyState::Deactivated => 3,
            KeyState::Compromised => 4,
            KeyState::Destroyed => 5,
            KeyState::DestroyedCompromised => 6,
        }
    }

    /// The UKO v4 managed-key state name.
    pub fn uko(self) -> &'static str {
        match self {
            KeyState::PreActive => "pre_activation",
            KeyState::Active => "active",
            KeyState::Suspended | KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
            KeyState::DestroyedCompromised => "destroyed_compromised",
        }
    }

    /// Whether the key is destroyed (its material is no longer usable).
    pub fn is_destroyed(self) -> bool {
        matches!(self, KeyState::Destroyed | KeyState::DestroyedCompromised)
    }

    /// The state after `transition`, or `None` if the transition is not allowed from here.
    pub fn apply(self, transition: Transition) -> Option<KeyState> {
        use KeyState as S;
        use Transition as T;
        match (transition, self) {
            (T::Activate, S::PreActive) => Some(S::Active),
            (T::Reactivate, S::Deactivated) => Some(S::Active),
            (T::Disable, S::Active) => Some(S::Suspended),
            (T::Enable, S::Suspended) => Some(S::Active),
            (T::Deactivate, S::PreActive | S::Active | S::Suspended) => Some(S::Deactivated),
            (T::Compromise, S::PreActive | S::Active | S::Suspended | S::Deactivated) => {
                Some(S::Compromised)
            }
            (T::Compromise, S::Destroyed) => Some(S::DestroyedCompromised),
            (T::Delete, S::PreActive | S::Active | S::Suspended | S::Deactivated) => {
                Some(S::Destroyed)
            }
            (T::Delete, S::Compromised) => Some(S::DestroyedCompromised),
            (T::Destroy, S::PreActive | S::Suspended | S::Deactivated) => Some(S::Destroyed),
            (T::Destroy, S::Compromised) => Some(S::DestroyedCompromised),
            (T::Restore, S::Destroyed) => Some(S::Active),
            _ => None,
        }
    }

    /// Whether a key in this state may be used for `usage` (Key Protect §7 state table, KMIP
    /// 1.4 §3.22: deactivated and compromised keys may still process, never protect).
    pub fn permits(self, usage: Usage) -> bool {
        use KeyState as S;
        match usage {
            Usage::Protect => self == S::Active,
            Usage::Process => matches!(self, S::Active | S::Deactivated | S::Compromised),
            Usage::Rotate => matches!(self, S::Active | S::Deactivated),
            Usage::Export => matches!(self, S::PreActive | S::Active | S::Deactivated),
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            KeyState::PreActive => "pre-active",
            KeyState::Active => "active",
            KeyState::Suspended => "suspended",
            KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
            KeyState::DestroyedCompromised => "destroyed-compromised",
        };
        f.write_str(name)
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Transition::Activate => "activate",
            Transition::Reactivate => "reactivate",
            Transition::Disable => "disable",
            Transition::Enable => "enable",
            Transition::Deactivate => "deactivate",
            Transition::Compromise => "compromise",
            Transition::Delete => "delete",
            Transition::Destroy => "destroy",
            Transition::Restore => "restore",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyState as S;
    use Transition as T;

    const TRANSITIONS: [Transition; 9] = [
        T::Activate,
        T::Reactivate,
        T::Disable,
        T::Enable,
        T::Deactivate,
        T::Compromise,
        T::Delete,
        T::Destroy,
        T::Restore,
    ];

    /// The full table: every (transition, state) pair that is allowed, and where it leads.
    /// Every pair not listed must be refused.
    const ALLOWED: &[(Transition, KeyState, KeyState)] = &[
        (T::Activate, S::PreActive, S::Active),
        (T::Reactivate, S::Deactivated, S::Active),
        (T::Disable, S::Active, S::Suspended),
        (T::Enable, S::Suspended, S::Active),
        (T::Deactivate, S::PreActive, S::Deactivated),
        (T::Deactivate, S::Active, S::Deactivated),
        (T::Deactivate, S::Suspended, S::Deactivated),
        (T::Compromise, S::PreActive, S::Compromised),
        (T::Compromise, S::Active, S::Compromised),
        (T::Compromise, S::Suspended, S::Compromised),
        (T::Compromise, S::Deactivated, S::Compromised),
        (T::Compromise, S::Destroyed, S::DestroyedCompromised),
        (T::Delete, S::PreActive, S::Destroyed),
        (T::Delete, S::Active, S::Destroyed),
        (T::Delete, S::Suspended, S::Destroyed),
        (T::Delete, S::Deactivated, S::Destroyed),
        (T::Delete, S::Compromised, S::DestroyedCompromised),
        (T::Destroy, S::PreActive, S::Destroyed),
        (T::Destroy, S::Suspended, S::Destroyed),
        (T::Destroy, S::Deactivated, S::Destroyed),
        (T::Destroy, S::Compromised, S::DestroyedCompromised),
        (T::Restore, S::Destroyed, S::Active),
    ];

    #[test]
    fn every_transition_from_every_state() {
        let mut allowed = 0;
        for t in TRANSITIONS {
            for s in KeyState::ALL {
                let expected = ALLOWED
                    .iter()
                    .find(|(tt, from, _)| *tt == t && *from == s)
                    .map(|(_, _, to)| *to);
                assert_eq!(s.apply(t), expected, "{t} from {s}");
                allowed += usize::from(expected.is_some());
            }
        }
        assert_eq!(allowed, ALLOWED.len());
    }

    #[test]
    fn codes_round_trip_and_are_stable() {
        for s in KeyState::ALL {
            assert_eq!(KeyState::from_code(s.code()), Some(s));
        }
        assert_eq!(KeyState::from_code(7), None);
        assert_eq!(KeyState::from_code(-1), None);
        let codes: Vec<i64> = KeyState::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn protocol_views() {
        let kp: Vec<u8> = KeyState::ALL.iter().map(|s| s.key_protect()).collect();
        assert_eq!(kp, vec![0, 1, 2, 3, 3, 5, 5]);
        let kmip: Vec<u32> = KeyState::ALL.iter().map(|s| s.kmip()).collect();
        assert_eq!(kmip, vec![1, 2, 3, 3, 4, 5, 6]);
        let uko: Vec<&str> = KeyState::ALL.iter().map(|s| s.uko()).collect();
        assert_eq!(
            uko,
            vec![
                "pre_activation",
                "active",
                "deactivated",
                "deactivated",
                "compromised",
                "destroyed",
                "destroyed_compromised"
            ]
        );
    }

    #[test]
    fn usage_by_state() {
        // Key Protect §7: wrap only when active; unwrap/rewrap when active or deactivated;
        // rotate when active or deactivated; nothing while suspended or destroyed.
        for s in KeyState::ALL {
            assert_eq!(s.permits(Usage::Protect), s == S::Active, "protect {s}");
            assert_eq!(
                s.permits(Usage::Process),
                matches!(s, S::Active | S::Deactivated | S::Compromised),
                "process {s}"
            );
            assert_eq!(
                s.permits(Usage::Rotate),
                matches!(s, S::Active | S::Deactivated),
                "rotate {s}"
            );
            assert_eq!(
                s.permits(Usage::Export),
                matches!(s, S::PreActive | S::Active | S::Deactivated),
                "export {s}"
            );
        }
    }

    #[test]
    fn destroyed_states_are_terminal_for_use() {
        for s in [S::Destroyed, S::DestroyedCompromised] {
            assert!(s.is_destroyed());
            for u in [Usage::Protect, Usage::Process, Usage::Rotate, Usage::Export] {
                assert!(!s.permits(u));
            }
        }
        assert_eq!(S::DestroyedCompromised.apply(T::Restore), None);
    }
}
