//! Extended attributes on descriptors and on symlinks (through /proc/self/fd paths).

use super::*;

pub(super) fn xattr_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP))
}

pub(super) fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))
}

pub(super) fn fset_xattr(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd, NUL-terminated name, value pointer/length from a slice.
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn set_xattr_required(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> std::result::Result<(), Fail> {
    fset_xattr(fd, name, value).map_err(|e| {
        Fail::Io("set overlay xattr (needs root and a file system with trusted xattrs, such as ext4 or xfs)", e)
    })
}

pub(super) fn lset_xattr_at(dir: &impl AsRawFd, name: &OsStr, xname: &[u8], value: &[u8]) -> io::Result<()> {
    let path = CString::new(proc_path(dir, name).into_os_string().into_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let n = cstr(xname)?;
    // SAFETY: NUL-terminated path and name, value from a slice.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn fget_xattr(fd: &impl AsRawFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buffer pointer/length from a Vec we own.
        let r = unsafe { libc::fgetxattr(fd.as_raw_fd(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ if xattr_unsupported(&e) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// All xattrs of an open file or directory, names with values.
pub(crate) fn list_xattrs(fd: &impl AsRawFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: buffer pointer/length from a Vec we own.
        let r = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ if xattr_unsupported(&e) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if let Some(v) = fget_xattr(fd, name)? {
            out.push((name.to_vec(), v));
        }
    }
    Ok(out)
}
