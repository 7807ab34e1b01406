//! The process-wide table of loaded PKCS#11 modules.
//!
//! PKCS#11 v2.40 §5.4: `C_Initialize` is called once per process and module, and `C_Finalize`
//! ends the module for every user in the process. So each module is loaded and initialized once
//! and kept for the life of the process (never finalized); every protector on it shares it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

use crate::HsmError;

static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// Returns the initialized module at `path`, loading it on first use.
pub(crate) fn load(path: &Path) -> Result<Pkcs11, HsmError> {
    let canonical = path
        .canonicalize()
        .map_err(|source| HsmError::ModuleMissing {
            module: path.to_path_buf(),
            source,
        })?;
    // A panic while the lock was held cannot leave the table inconsistent: entries are only
    // pushed once fully initialized.
    let mut modules = MODULES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| *p == canonical) {
        return Ok(ctx.clone());
    }
    let load_error = |source| HsmError::ModuleLoad {
        module: path.to_path_buf(),
        source,
    };
    let ctx = Pkcs11::new(&canonical).map_err(load_error)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another component of this process initialized the module already; share it.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_error(e)),
    }
    modules.push((canonical, ctx.clone()));
    Ok(ctx)
}
