//! Checks of request fields, shared by every path that takes them, so the
//! API refuses a bad field before anything is allocated or made.

use crate::Error;

/// An interface name, by the kernel's rules (the workspace's one check).
pub fn ifname(s: &str) -> Result<(), Error> {
    pilus_netlink::valid_ifname(s).map_err(|e| Error::invalid("ifname", e.to_string()))
}

/// A MAC address, `aa:bb:cc:dd:ee:ff`.
pub fn mac(s: &str) -> Result<[u8; 6], Error> {
    pilus_netlink::pod::parse_mac(s).ok_or_else(|| {
        Error::invalid(
            "mac",
            format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    })
}

/// Container ids are path segments of the API (`/v1/endpoints/{id}`) and
/// feed the host interface's name: the CNI plugin's rule (letters, digits,
/// '_', '.', '-'), plus a length bound.
pub fn container_id(s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        return Err(Error::invalid(
            "container_id",
            format!("{s:?} must be 1 to 256 letters, digits, '_', '.' or '-'"),
        ));
    }
    Ok(())
}

/// Kubernetes namespace names are DNS labels.
pub fn namespace(s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !ok {
        return Err(Error::invalid(
            "namespace",
            format!("{s:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"),
        ));
    }
    Ok(())
}

/// A node's name: it is part of the state's keys and of the lab's names.
pub fn node_name(s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !ok {
        return Err(Error::invalid(
            "node name",
            format!("{s:?} must be 1 to 253 letters, digits, '-', '.' or '_'"),
        ));
    }
    Ok(())
}
