//! The one conversion every part of the exporter needs: an `oci-spec` builder's error
//! as csbox's.

use crate::error::{Error, Result};

pub(super) fn oci<T>(r: std::result::Result<T, oci_spec::OciSpecError>) -> Result<T> {
    r.map_err(|e| Error::Other(format!("building the OCI spec: {e}")))
}
